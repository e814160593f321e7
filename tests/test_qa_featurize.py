"""Tests for finetune/qa/qa_featurize.py: an exact hand-worked window layout on a tiny
vocab, and window / max-context / target properties over the real SQuAD dev files."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from finetune.qa import qa_data
from finetune.qa import qa_featurize
from model import tokenization
from util.cli import UserError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "vocab.txt"
SQUAD_V1 = DATA / "squad" / "dev-v1.1.reconstructed.json"
SQUAD_V2 = DATA / "squad" / "dev-v2.0.reconstructed.json"

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "?", "a", "b",
              "c", "d", "e", "f", "1895", "-", "(", ")"]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return tokenization.FullTokenizer(str(path))


@pytest.fixture(scope="module")
def tokenizer():
    if not VOCAB.exists():
        pytest.skip("shared vocab %s is absent" % VOCAB)
    return tokenization.FullTokenizer(str(VOCAB))


def _example(words, start, end, answer, eid=3, question="what is ?"):
    return qa_data.QAExample(task_name="squadv1", eid=eid, qas_id="q", qid=None,
                             question_text=question, doc_tokens=tuple(words),
                             orig_answer_text=answer, start_position=start,
                             end_position=end)


def test_hand_worked_windows(tiny_tokenizer):
    # Question 3 pieces, max_seq_length 10 -> doc budget 10 - 3 - 3 = 4; stride 2:
    # windows [0, 4) and [2, 6). "c" has more context in window 0 (min(2, 1) vs
    # min(0, 3)), "d" in window 1 (min(3, 0) vs min(1, 2)).
    featurizer = qa_featurize.QAFeaturizer(tiny_tokenizer, 10, 64, 2)
    example = _example("a b c d e f".split(), 2, 3, "c d")
    windows = featurizer.featurize(example, is_training=True)
    assert [w.tokens for w in windows] == [
        ("[CLS]", "what", "is", "?", "[SEP]", "a", "b", "c", "d", "[SEP]"),
        ("[CLS]", "what", "is", "?", "[SEP]", "c", "d", "e", "f", "[SEP]")]
    assert [w.feature_id for w in windows] == [3000, 3001]
    assert windows[0].segment_ids == [0] * 5 + [1] * 5
    assert windows[0].input_ids == [2, 5, 6, 7, 3, 8, 9, 10, 11, 3]
    assert windows[0].token_to_orig_map == {5: 0, 6: 1, 7: 2, 8: 3}
    assert windows[0].token_is_max_context == {5: True, 6: True, 7: True, 8: False}
    assert windows[1].token_is_max_context == {5: False, 6: True, 7: True, 8: True}
    assert [(w.start_position, w.end_position) for w in windows] == [(7, 8), (5, 6)]
    # "e f" is only wholly inside window 1; window 0 targets [CLS].
    windows = featurizer.featurize(_example("a b c d e f".split(), 4, 5, "e f"), True)
    assert [(w.start_position, w.end_position) for w in windows] == [(0, 0), (7, 8)]
    # Inference windows carry no targets; padding is zeros.
    short = qa_featurize.QAFeaturizer(tiny_tokenizer, 13, 64, 2).featurize(example, False)
    assert len(short) == 1 and short[0].start_position is None
    assert short[0].input_mask == [1] * 12 + [0] and short[0].input_ids[-1] == 0


def test_question_truncation_and_improved_span(tiny_tokenizer):
    featurizer = qa_featurize.QAFeaturizer(tiny_tokenizer, 16, 2, 128)
    # The answer "1895" is part of the word "(1895-1943)" -> pieces ( 1895 - [UNK] ).
    example = _example(["a", "(1895-1943)"], 1, 1, "1895", question="what is a b c ?")
    (window,) = featurizer.featurize(example, True)
    assert window.tokens[:4] == ("[CLS]", "what", "is", "[SEP]")
    assert window.tokens[window.start_position:window.end_position + 1] == ("1895",)


def test_featurize_errors(tiny_tokenizer):
    with pytest.raises(qa_featurize.FeaturizeError, match="doc_stride must be >= 1") as info:
        qa_featurize.QAFeaturizer(tiny_tokenizer, 10, 64, 0)
    assert isinstance(info.value, UserError)  # a settings problem: one line, exit 2
    featurizer = qa_featurize.QAFeaturizer(tiny_tokenizer, 6, 64, 128)
    with pytest.raises(qa_featurize.FeaturizeError, match="leaves no room for the document"):
        featurizer.featurize(_example("a b".split(), 0, 0, "a"), False)


def test_make_doc_spans_and_max_context():
    spans = qa_featurize.make_doc_spans(300, 128, 64)
    assert [(s.start, s.length) for s in spans] == [(0, 128), (64, 128), (128, 128),
                                                    (192, 108)]
    assert qa_featurize.make_doc_spans(0, 10, 5) == []
    assert qa_featurize.max_context_span(spans, 100) == 1  # min(100,27) < min(36,91)
    assert qa_featurize.max_context_span(spans, 299) == 3


def _check_windows(windows, doc_len, budget, stride):
    """Windows follow make_doc_spans and each wordpiece is max-context exactly once."""
    spans = qa_featurize.make_doc_spans(doc_len, budget, stride)
    assert len(windows) == len(spans)
    max_context_positions = []
    for w, span in zip(windows, spans):
        positions = sorted(w.token_to_orig_map)
        assert len(positions) == span.length <= budget
        assert all(w.segment_ids[p] == 1 for p in positions)
        max_context_positions += [span.start + p - positions[0] for p in positions
                                  if w.token_is_max_context[p]]
    assert sorted(max_context_positions) == list(range(doc_len))


def test_real_v1_dev_windows_and_targets(tokenizer):
    if not SQUAD_V1.exists():
        pytest.skip("shared data file %s is absent" % SQUAD_V1)
    examples = qa_data.read_squad(str(SQUAD_V1), "squadv1", True, False).examples
    assert len(examples) == 10570  # every v1.1 dev answer is recoverable
    featurizer = qa_featurize.QAFeaturizer(tokenizer, 192, 64, 64)
    n_windows = n_multi = exact = with_target = 0
    for example in examples[:3000]:
        windows = featurizer.featurize(example, is_training=True)
        doc = featurizer._document(example.doc_tokens)
        budget = 192 - len(tokenizer.tokenize(example.question_text)[:64]) - 3
        _check_windows(windows, len(doc.tokens), budget, 64)
        n_windows += len(windows)
        n_multi += len(windows) > 1
        targets = [(w, w.start_position, w.end_position) for w in windows
                   if w.start_position > 0]
        assert targets, "the answer must be wholly inside some window"
        with_target += 1
        w, start, end = targets[0]
        exact += list(w.tokens[start:end + 1]) == tokenizer.tokenize(example.orig_answer_text)
        assert all(w.feature_id == 1000 * example.eid + w.doc_span_index for w in windows)
    assert n_multi > 500 and n_windows > 3000
    # Sub-word answers ("Japan" in "Japanese") cannot match exactly; they are rare.
    assert exact / with_target > 0.99


def test_real_v2_dev_impossible_targets_are_cls(tokenizer):
    if not SQUAD_V2.exists():
        pytest.skip("shared data file %s is absent" % SQUAD_V2)
    examples = qa_data.read_squad(str(SQUAD_V2), "squad", True, True).examples[:400]
    featurizer = qa_featurize.QAFeaturizer(tokenizer, 128, 64, 128)
    for example in examples:
        for w in featurizer.featurize(example, True):
            assert w.is_impossible == example.is_impossible
            if example.is_impossible:
                assert (w.start_position, w.end_position) == (0, 0)
            assert w.input_ids[:1] == [tokenizer.vocab["[CLS]"]]
            assert len(w.input_ids) == len(w.input_mask) == len(w.segment_ids) == 128
