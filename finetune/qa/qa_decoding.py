"""Turning per-window head outputs into answer texts and null odds (spec e.2).

For every example, each window's (start, end) candidates are filtered (inside the
window's document tokens, start != [CLS], start has max context in this window,
end >= start, length <= max_answer_length), scored by start + end log-prob (or logit
without joint prediction) and sorted. The best candidates become text by joining the
wordpieces and aligning them with the original words (`get_final_text`); duplicates
are dropped and up to n_best_size kept; "empty" if none survives. For SQuAD 2.0 the
null score is the minimum answerability logit over the example's windows.
"""

import dataclasses

import numpy as np

from model import tokenization

# Null score of an example without any window (empty context); the original started
# its running minimum at this value.
NO_WINDOW_NULL_SCORE = 1e6


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """Decoding hparams (spec b.3 names)."""
    n_best_size: int = 20
    max_answer_length: int = 30
    joint_prediction: bool = True
    answerable_classifier: bool = True
    do_lower_case: bool = True

    @classmethod
    def from_config(cls, config):
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class RawResult:
    """Head outputs of one window (numpy), keyed by its feature id.

    Shapes: start_logits/end_logits [S], answerable_logit scalar,
    start_top_log_probs/start_top_index [K], end_top_log_probs/end_top_index [K,K].
    """
    feature_id: int
    start_logits: np.ndarray
    end_logits: np.ndarray
    answerable_logit: float
    start_top_log_probs: np.ndarray
    start_top_index: np.ndarray
    end_top_log_probs: np.ndarray
    end_top_index: np.ndarray

    @classmethod
    def from_outputs(cls, outputs):
        """Builds a result from one example's slice of the head's outputs dict."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "feature_id"]
        values = {name: np.asarray(outputs[name]) for name in names}
        values["answerable_logit"] = float(values["answerable_logit"])
        return cls(feature_id=int(outputs["eid"]), **values)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A span in one window: window positions and its two scores."""
    feature_index: int
    start_index: int
    end_index: int
    start_logit: float
    end_logit: float


@dataclasses.dataclass(frozen=True)
class NbestEntry:
    text: str
    start_logit: float
    end_logit: float


@dataclasses.dataclass(frozen=True)
class ExamplePrediction:
    """Decoded answer of one example: best text, n-best list and null score
    (None outside SQuAD 2.0)."""
    text: str
    nbest: list
    null_score: object = None


def best_indexes(logits, n_best_size):
    """Indices of the n largest logits, best first (stable for ties)."""
    order = sorted(range(len(logits)), key=lambda i: logits[i], reverse=True)
    return order[:n_best_size]


def softmax(scores):
    """Probabilities of a list of scores (max-subtracted for stability)."""
    if not scores:
        return []
    exp = np.exp(np.asarray(scores, np.float64) - max(scores))
    return list(exp / exp.sum())


def detokenize(wordpieces):
    """Joins wordpieces into text: drops "##" continuation marks, collapses spaces."""
    text = " ".join(wordpieces).replace(" ##", "").replace("##", "")
    return " ".join(text.strip().split())


def _strip_spaces(text):
    """Text without spaces, and {index in that text: index in `text`}."""
    chars, ns_to_s = [], {}
    for i, char in enumerate(text):
        if char == " ":
            continue
        ns_to_s[len(chars)] = i
        chars.append(char)
    return "".join(chars), ns_to_s


def get_final_text(pred_text, orig_text, do_lower_case, basic_tokenizer=None):
    """Projects normalised predicted text back onto the original words.

    `orig_text` (the whole original words the span touches) can hold extra characters,
    e.g. pred "steve smith" vs orig "Steve Smith's"; `pred_text` has lost case and
    accents. Both are aligned character by character through the BasicTokenizer'd
    original with spaces removed; if lengths disagree or a boundary does not map, the
    original words are returned unchanged.
    """
    tokenizer = basic_tokenizer or tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    tok_text = " ".join(tokenizer.tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1
    orig_ns_text, orig_ns_to_s = _strip_spaces(orig_text)
    tok_ns_text, tok_ns_to_s = _strip_spaces(tok_text)
    if len(orig_ns_text) != len(tok_ns_text):
        return orig_text
    tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
    orig_start = orig_ns_to_s.get(tok_s_to_ns.get(start))
    orig_end = orig_ns_to_s.get(tok_s_to_ns.get(end))
    if orig_start is None or orig_end is None:
        return orig_text
    return orig_text[orig_start:orig_end + 1]


def _pairs(result, settings):
    """(start, end, start score, end score) candidate pairs of one window."""
    if settings.joint_prediction:
        for i, start in enumerate(result.start_top_index):
            for j, end in enumerate(result.end_top_index[i]):
                yield (int(start), int(end), float(result.start_top_log_probs[i]),
                       float(result.end_top_log_probs[i, j]))
    else:
        starts = best_indexes(result.start_logits, settings.n_best_size)
        ends = best_indexes(result.end_logits, settings.n_best_size)
        for start in starts:
            for end in ends:
                yield (start, end, float(result.start_logits[start]),
                       float(result.end_logits[end]))


def window_candidates(feature_index, feature, result, settings):
    """Valid spans of one window (qa_featurize.QAFeature + RawResult)."""
    candidates = []
    for start, end, start_score, end_score in _pairs(result, settings):
        if start >= len(feature.tokens) or end >= len(feature.tokens) or start == 0:
            continue
        if start not in feature.token_to_orig_map or end not in feature.token_to_orig_map:
            continue
        if not feature.token_is_max_context.get(start, False):
            continue
        if end < start or end - start + 1 > settings.max_answer_length:
            continue
        candidates.append(Candidate(feature_index, start, end, start_score, end_score))
    return candidates


def _window_null_score(result, settings):
    """Null score of a window: answerability logit, or the [CLS] span's score."""
    if settings.answerable_classifier:
        return result.answerable_logit
    return float(result.start_logits[0] + result.end_logits[0])


def _nbest(example, features, candidates, settings, tokenizer):
    """Distinct texts of the best candidates, best first; ["empty"] if none."""
    candidates = sorted(candidates, key=lambda c: c.start_logit + c.end_logit,
                        reverse=True)
    seen, nbest = set(), []
    for cand in candidates:
        if len(nbest) >= settings.n_best_size:
            break
        feature = features[cand.feature_index]
        pred_text = detokenize(feature.tokens[cand.start_index:cand.end_index + 1])
        orig_start = feature.token_to_orig_map[cand.start_index]
        orig_end = feature.token_to_orig_map[cand.end_index]
        orig_text = " ".join(example.doc_tokens[orig_start:orig_end + 1])
        text = get_final_text(pred_text, orig_text, settings.do_lower_case, tokenizer)
        if text in seen:
            continue
        seen.add(text)
        nbest.append(NbestEntry(text, cand.start_logit, cand.end_logit))
    # Rarely nothing is valid (e.g. every top start lacks max context): a nonce answer.
    return nbest or [NbestEntry("empty", 0.0, 0.0)]


def decode_example(example, features, results_by_id, settings, v2, tokenizer=None):
    """Decodes one example.

    Args:
      example: qa_data.QAExample.
      features: its windows (qa_featurize.QAFeature), as featurised for inference.
      results_by_id: {feature id: RawResult}.
      settings: DecodeSettings.
      v2: compute the SQuAD 2.0 null score.
      tokenizer: a BasicTokenizer to reuse (built from settings if None).
    Returns:
      ExamplePrediction; for v2 `text` is the best non-empty answer and null_score
      the null odds (answered "" when it exceeds qa_na_threshold).
    """
    candidates, null_score = [], None
    for index, feature in enumerate(features):
        if feature.feature_id not in results_by_id:
            raise KeyError("no head output for feature %d of example %r; every window "
                           "of the evaluated examples must be predicted." % (
                               feature.feature_id, example.example_id))
        result = results_by_id[feature.feature_id]
        if v2:
            window_null = _window_null_score(result, settings)
            null_score = window_null if null_score is None else min(null_score, window_null)
        candidates.extend(window_candidates(index, feature, result, settings))
    nbest = _nbest(example, features, candidates, settings, tokenizer)
    if not v2:
        return ExamplePrediction(nbest[0].text, nbest)
    best = next((entry for entry in nbest if entry.text), None)
    if null_score is None:  # an empty context has no window: the original's start value
        null_score = NO_WINDOW_NULL_SCORE
    if not settings.answerable_classifier and best is not None:
        null_score -= best.start_logit + best.end_logit
    return ExamplePrediction(best.text if best else "", nbest, float(null_score))


def nbest_json(prediction):
    """The original's in-memory n-best records (text, probability, logits)."""
    probs = softmax([e.start_logit + e.end_logit for e in prediction.nbest])
    return [dict(text=e.text, probability=float(p), start_logit=e.start_logit,
                 end_logit=e.end_logit) for e, p in zip(prediction.nbest, probs)]


def decode_all(examples, featurize_fn, results_by_id, settings, v2):
    """Decodes every example.

    Args:
      examples: the evaluated qa_data.QAExamples.
      featurize_fn: example -> its inference windows (re-featurising is cheap and
        keeps the token maps out of the TFRecords, as in the original).
      results_by_id: {feature id: RawResult}.
      settings: DecodeSettings.
      v2: SQuAD 2.0 (null odds).
    Returns:
      (predictions {example id: text}, null_odds {example id: float} (empty unless
      v2), nbest {example id: list of dicts}).
    """
    tokenizer = tokenization.BasicTokenizer(do_lower_case=settings.do_lower_case)
    predictions, null_odds, nbest = {}, {}, {}
    for example in examples:
        prediction = decode_example(example, featurize_fn(example), results_by_id,
                                    settings, v2, tokenizer)
        predictions[example.example_id] = prediction.text
        nbest[example.example_id] = nbest_json(prediction)
        if v2:
            null_odds[example.example_id] = prediction.null_score
    return predictions, null_odds, nbest
