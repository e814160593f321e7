"""SQuAD v1.1 / v2.0 and MRQA 2019 evaluation, matching the official scripts.

Written from the published definitions (spec e.2): the same answer normalisation,
exact match, token-bag F1, max over gold answers, x100, and for v2.0 the no-answer
threshold and the best-threshold search of `evaluate-v2.0.py`. Differences between
the three official scripts are kept on purpose:
  - v1.1: a missing prediction scores 0 and still counts in the total; F1 of two
    empty answers is 0 (no shared token).
  - v2.0: gold answers normalising to "" are dropped, an unanswerable question's only
    gold answer is "", F1 is 1 iff both sides are empty; questions without a
    prediction are left out of `exact`/`f1`/`total`.
  - MRQA (as ELECTRA calls it, skip_no_answer=True): questions without a prediction
    are skipped entirely.
"""

import collections
import re
import string

from util.cli import UserError

_PUNCTUATION = frozenset(string.punctuation)
# The official scripts remove the whole words a/an/the (word boundaries, Unicode-aware
# as every Python 3 str regex is) and replace them by a space.
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


class EvalInputError(UserError):
    """Predictions / gold data given to an evaluation cannot be scored (e.g. a gold
    file without questions)."""


def normalize_answer(text):
    """Lower-cases, drops ASCII punctuation, the words a/an/the and extra whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction, ground_truth):
    """1 if both normalise to the same string else 0 (same in v1.1, v2.0 and MRQA)."""
    return int(normalize_answer(prediction) == normalize_answer(ground_truth))


def _overlap_f1(pred_tokens, gold_tokens):
    """Token-bag F1; 0 when nothing is shared (which includes two empty lists)."""
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score_v1(prediction, ground_truth):
    """F1 of the v1.1 and MRQA scripts (two empty answers score 0)."""
    return _overlap_f1(normalize_answer(prediction).split(),
                       normalize_answer(ground_truth).split())


def f1_score_v2(prediction, ground_truth):
    """F1 of the v2.0 script: if either side is empty, 1 iff both are empty."""
    pred_tokens = normalize_answer(prediction).split() if prediction else []
    gold_tokens = normalize_answer(ground_truth).split() if ground_truth else []
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    return _overlap_f1(pred_tokens, gold_tokens)


def _max_over_gold(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gold) for gold in ground_truths)


def _iter_squad_qas(dataset):
    """Yields every `qas` entry of SQuAD `data` (a list of articles)."""
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def evaluate_v1(dataset, predictions):
    """Official SQuAD v1.1 evaluation.

    Args:
      dataset: the `data` list of a SQuAD JSON file.
      predictions: {question id: predicted text}.
    Returns:
      {"exact_match": float, "f1": float}, both in [0, 100].
    """
    exact = f1 = total = 0
    for qa in _iter_squad_qas(dataset):
        total += 1
        if qa["id"] not in predictions:
            continue  # the official script scores an unanswered question 0
        golds = [answer["text"] for answer in qa["answers"]]
        prediction = predictions[qa["id"]]
        exact += _max_over_gold(exact_match_score, prediction, golds)
        f1 += _max_over_gold(f1_score_v1, prediction, golds)
    if total == 0:
        raise EvalInputError("SQuAD v1.1 evaluation: the gold data has no questions.")
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def evaluate_mrqa(answers, predictions, skip_no_answer=True):
    """Official MRQA evaluation.

    Args:
      answers: {qid: list of gold answer strings}.
      predictions: {qid: predicted text}.
      skip_no_answer: ELECTRA passes True: questions without a prediction are ignored;
        False counts them as 0, like v1.1.
    Returns:
      {"exact_match": float, "f1": float}.
    """
    exact = f1 = total = 0
    for qid, golds in answers.items():
        if qid not in predictions:
            if not skip_no_answer:
                total += 1
            continue
        total += 1
        exact += _max_over_gold(exact_match_score, predictions[qid], golds)
        f1 += _max_over_gold(f1_score_v1, predictions[qid], golds)
    if total == 0:
        raise EvalInputError(
            "MRQA evaluation: no question has a prediction (gold has %d questions); "
            "check that the predictions are keyed by MRQA `qid`." % len(answers))
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def v2_raw_scores(dataset, predictions):
    """Per-question exact/F1 before any no-answer threshold (v2.0 rules).

    Returns:
      (exact_scores, f1_scores, qid_to_has_ans): the first two only hold questions
      with a prediction; the last holds every question.
    """
    exact_scores, f1_scores, qid_to_has_ans = {}, {}, {}
    for qa in _iter_squad_qas(dataset):
        qid = qa["id"]
        qid_to_has_ans[qid] = bool(qa["answers"])
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
        if not golds:
            golds = [""]  # an unanswerable question's only correct answer is ""
        if qid not in predictions:
            continue
        exact_scores[qid] = _max_over_gold(exact_match_score, predictions[qid], golds)
        f1_scores[qid] = _max_over_gold(f1_score_v2, predictions[qid], golds)
    return exact_scores, f1_scores, qid_to_has_ans


def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    """Questions whose null score exceeds the threshold are answered "".

    An abstention scores 1 on an unanswerable question and 0 on an answerable one.
    """
    new_scores = {}
    for qid, score in scores.items():
        if na_probs[qid] > na_prob_thresh:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = score
    return new_scores


def _eval_dict(exact_scores, f1_scores, qids):
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact_scores[q] for q in qids) / total,
        "f1": 100.0 * sum(f1_scores[q] for q in qids) / total,
        "total": total,
    }


def find_best_thresh(predictions, scores, na_probs, qid_to_has_ans):
    """The official best-threshold search over null odds sorted ascending.

    Start from "abstain everywhere" (score = number of unanswerable questions), then
    answer questions in increasing null-odds order: an answerable one adds its score,
    an unanswerable one costs 1 if the prediction is non-empty. The threshold is the
    null odds of the question after which the running score was highest (strictly
    improving, so ties keep the earliest); 0.0 if abstaining everywhere is best.

    Returns:
      (best score x100 / number of scored questions, threshold).
    """
    cur_score = sum(1 for has_ans in qid_to_has_ans.values() if not has_ans)
    best_score, best_thresh = cur_score, 0.0
    # sorted() is stable, so equal null odds keep the null-odds dict's order.
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if predictions[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def evaluate_v2(dataset, predictions, na_probs=None, na_prob_thresh=1.0):
    """Official SQuAD v2.0 evaluation (the dict `evaluate-v2.0.py` writes).

    Args:
      dataset: the `data` list of a SQuAD 2.0 JSON file.
      predictions: {question id: predicted text ("" = no answer)}.
      na_probs: {question id: null score}, higher = more likely unanswerable; None
        means 0.0 for every prediction and no best_* keys (as the official script).
      na_prob_thresh: predict "" where the null score is > this (ELECTRA: -2.75).
    Returns:
      dict sorted by key: exact, f1, total, HasAns_*/NoAns_* (when such questions
      exist) and best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    exact_raw, f1_raw, qid_to_has_ans = v2_raw_scores(dataset, predictions)
    if not exact_raw:
        raise EvalInputError("SQuAD v2.0 evaluation: no question has a prediction.")
    use_na = na_probs is not None
    if not use_na:
        na_probs = {qid: 0.0 for qid in predictions}
    missing = [qid for qid in exact_raw if qid not in na_probs]
    if missing:
        raise EvalInputError(
            "SQuAD v2.0 evaluation: %d predicted questions have no null odds (e.g. %r); "
            "write null odds for every prediction." % (len(missing), missing[0]))
    exact_thr = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thr = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out = _eval_dict(exact_thr, f1_thr, list(exact_thr))
    # The official script would crash with a KeyError on a split question that has no
    # prediction; we restrict the splits to scored questions instead.
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in qid_to_has_ans.items() if has == wanted and q in exact_thr]
        if qids:
            for key, value in _eval_dict(exact_thr, f1_thr, qids).items():
                out["%s_%s" % (prefix, key)] = value
    if use_na:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(
            predictions, exact_raw, na_probs, qid_to_has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(
            predictions, f1_raw, na_probs, qid_to_has_ans)
    return dict(sorted(out.items()))
