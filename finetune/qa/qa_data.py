"""Reading SQuAD 1.1/2.0 JSON and MRQA 2019 JSONL files into QA examples (spec e.2).

The context is split into words on whitespace (space, tab, CR, LF, U+202F) with a
char->word map. For training, the first answer's character span is projected onto
those words; an answer whose text cannot be found there (case-insensitive,
whitespace-normalised) or that runs past the context is dropped and counted as a
failure, as in the original. Malformed input raises `QADataError` naming the file, the
place inside it (JSON path, or line number for JSONL) and the problem.
"""

import dataclasses
import gzip
import json
from typing import Optional

from finetune import task as task_lib

# Characters the original treats as word separators. U+202F (narrow no-break space)
# appears inside SQuAD contexts; Python's str.isspace() would also split on others,
# which would change the word map, so the set is explicit.
_WHITESPACE = frozenset(" \t\r\n\u202f")


class QADataError(task_lib.DataError):
    """A QA data file is malformed; the message names the file and the problem.

    A util.cli.UserError (so also a ValueError): scripts print it as one line, exit 2.
    """


@dataclasses.dataclass(frozen=True)
class QAExample(task_lib.Example):
    """One question over one context.

    Attributes:
      task_name: e.g. "squad", "newsqa".
      eid: index of the example in its split (feature ids are 1000 * eid + window).
      qas_id: SQuAD question `id` (None when absent).
      qid: MRQA question `qid` (None when absent).
      question_text: the question.
      doc_tokens: whitespace-split context words.
      orig_answer_text: training answer text ("" if impossible, None for eval).
      start_position / end_position: word indices of the training answer (-1 if
        impossible, None for eval).
      is_impossible: SQuAD 2.0 unanswerable flag (always False for v1.1 / MRQA).
      answers: gold answer texts (all annotators), used by evaluation.
    """
    task_name: str
    eid: int
    qas_id: Optional[str]
    qid: Optional[str]
    question_text: str
    doc_tokens: tuple
    orig_answer_text: Optional[str] = None
    start_position: Optional[int] = None
    end_position: Optional[int] = None
    is_impossible: bool = False
    answers: tuple = ()

    @property
    def example_id(self):
        """The key of prediction files: SQuAD `id` for tasks named *squad*, else the
        MRQA `qid` (MRQA lines also carry an `id`, which is not what MRQA evaluates)."""
        return self.qas_id if "squad" in self.task_name else self.qid


@dataclasses.dataclass(frozen=True)
class ReadResult:
    """Examples read from one file plus the number of training answers dropped."""
    examples: list
    failures: int


def is_whitespace(char):
    """True for the original's word separators (space, \\t, \\r, \\n, U+202F)."""
    return char in _WHITESPACE


def split_context(text):
    """Splits a context into words and maps every character to its word.

    Returns:
      (words, char_to_word): char_to_word[i] is the index of the word containing
      character i; a whitespace character maps to the preceding word (-1 before any).
    """
    words, char_to_word = [], []
    prev_is_whitespace = True
    for char in text:
        if is_whitespace(char):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                words.append(char)
            else:
                words[-1] += char
            prev_is_whitespace = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def _get(obj, key, kind, where):
    """obj[key], checked to be of `kind`; raises QADataError naming `where`."""
    if not isinstance(obj, dict):
        raise QADataError("%s: expected a JSON object, got %s." % (where, type(obj).__name__))
    if key not in obj:
        raise QADataError("%s: missing key %r." % (where, key))
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise QADataError("%s: key %r should be %s, got %s." % (
            where, key, names, type(value).__name__))
    return value


def _answer_words(words, char_to_word, offset, text):
    """Projects a character-level answer onto word indices.

    Returns:
      (start_word, end_word), or None when the span is outside the context or its
      text cannot be recovered from the words it covers.
    """
    end_char = offset + len(text) - 1
    if offset < 0 or not text or end_char >= len(char_to_word):
        return None
    start_word, end_word = char_to_word[offset], char_to_word[end_char]
    if start_word < 0:
        return None
    # Only keep answers whose text is really there; failures are usually odd Unicode.
    actual = " ".join(words[start_word:end_word + 1]).lower()
    cleaned = " ".join(text.split()).lower()
    if actual.find(cleaned) == -1:
        return None
    return start_word, end_word


def _training_answer(qa, where):
    """(char offset, text) of the first training answer in SQuAD or MRQA format."""
    if "detected_answers" in qa:  # MRQA format
        answers = _get(qa, "detected_answers", list, where)
        if not answers:
            raise QADataError("%s: 'detected_answers' is empty." % where)
        answer_where = where + ".detected_answers[0]"
        spans = _get(answers[0], "char_spans", list, answer_where)
        if not spans or not isinstance(spans[0], list) or not spans[0]:
            raise QADataError("%s: 'char_spans' should be a non-empty list of "
                              "[start, end] pairs." % answer_where)
        offset = spans[0][0]
    else:  # SQuAD format
        answers = _get(qa, "answers", list, where)
        if not answers:
            raise QADataError("%s: an answerable training question needs at least one "
                              "entry in 'answers'." % where)
        answer_where = where + ".answers[0]"
        offset = _get(answers[0], "answer_start", int, answer_where)
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise QADataError("%s: the answer start should be an integer." % answer_where)
    return offset, _get(answers[0], "text", str, answer_where)


def _eval_answers(qa, where):
    """Gold answer strings: SQuAD answers[].text, or MRQA answers (list of str)."""
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        raise QADataError("%s: 'answers' should be a list." % where)
    texts = []
    for i, answer in enumerate(answers):
        if isinstance(answer, str):
            texts.append(answer)
        else:
            texts.append(_get(answer, "text", str, "%s.answers[%d]" % (where, i)))
    return tuple(texts)


def paragraph_examples(paragraph, task_name, first_eid, is_training, v2, where,
                       id_key="id"):
    """Builds the examples of one paragraph (SQuAD paragraph or MRQA line).

    Args:
      paragraph: dict with "context" and "qas".
      task_name: task the examples belong to.
      first_eid: eid of the first kept example.
      is_training: extract the training answer span (and drop unrecoverable ones).
      v2: read `is_impossible` (SQuAD 2.0).
      where: location prefix for error messages, e.g. "dev.json data[0].paragraphs[3]".
      id_key: the question-id key that must be present ("id" SQuAD, "qid" MRQA).
    Returns:
      (examples, failures)
    """
    context = _get(paragraph, "context", str, where)
    words, char_to_word = split_context(context)
    examples, failures = [], 0
    for i, qa in enumerate(_get(paragraph, "qas", list, where)):
        qa_where = "%s.qas[%d]" % (where, i)
        question = _get(qa, "question", str, qa_where)
        if id_key not in qa:
            raise QADataError("%s: missing key %r (the question id)." % (qa_where, id_key))
        fields = dict(
            task_name=task_name, eid=first_eid + len(examples),
            qas_id=str(qa["id"]) if "id" in qa else None,
            qid=str(qa["qid"]) if "qid" in qa else None,
            question_text=question, doc_tokens=tuple(words),
            answers=_eval_answers(qa, qa_where))
        if is_training:
            impossible = _get(qa, "is_impossible", bool, qa_where) if v2 else False
            if impossible:
                fields.update(is_impossible=True, orig_answer_text="",
                              start_position=-1, end_position=-1)
            else:
                offset, text = _training_answer(qa, qa_where)
                span = _answer_words(words, char_to_word, offset, text)
                if span is None:
                    failures += 1
                    continue
                fields.update(orig_answer_text=text, start_position=span[0],
                              end_position=span[1])
        examples.append(QAExample(**fields))
    return examples, failures


def load_json(path):
    """Parses a JSON file; a syntax error becomes a QADataError with its position."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise QADataError("%s: file not found." % path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QADataError("%s: not valid JSON (%s); the file may be truncated or not "
                          "a SQuAD-format file." % (path, e)) from None


def read_squad(path, task_name, is_training, v2):
    """Reads a SQuAD 1.1 / 2.0 JSON file.

    Returns:
      ReadResult(examples, failures).
    """
    data = _get(load_json(path), "data", list, path)
    examples, failures = [], 0
    for a, article in enumerate(data):
        paragraphs = _get(article, "paragraphs", list, "%s data[%d]" % (path, a))
        for p, paragraph in enumerate(paragraphs):
            new, failed = paragraph_examples(
                paragraph, task_name, len(examples), is_training, v2,
                "%s data[%d].paragraphs[%d]" % (path, a, p))
            examples.extend(new)
            failures += failed
    return ReadResult(examples, failures)


def iter_jsonl(path, max_lines=None):
    """Yields (line number from 1, parsed object) of a JSON-lines file (.gz allowed).

    Blank lines are skipped; `max_lines` stops after that many lines (debug mode).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if max_lines is not None and number > max_lines:
                    return
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as e:
                    raise QADataError("%s line %d: not valid JSON (%s)." % (
                        path, number, e)) from None
    except FileNotFoundError:
        raise QADataError("%s: file not found." % path) from None
    except (UnicodeDecodeError, OSError) as e:
        raise QADataError("%s: cannot be read as UTF-8 JSON lines (%s)." % (path, e)) from None


def read_mrqa(path, task_name, is_training, max_lines=None):
    """Reads an MRQA 2019 JSONL file (a line holding "header" is skipped).

    Returns:
      ReadResult(examples, failures).
    """
    examples, failures = [], 0
    for number, paragraph in iter_jsonl(path, max_lines):
        if isinstance(paragraph, dict) and "header" in paragraph:
            continue
        new, failed = paragraph_examples(paragraph, task_name, len(examples), is_training,
                                         False, "%s line %d" % (path, number), "qid")
        examples.extend(new)
        failures += failed
    return ReadResult(examples, failures)


def read_mrqa_answers(path):
    """{qid: gold answer strings} of an MRQA file, as the official MRQA eval reads it."""
    answers = {}
    for number, paragraph in iter_jsonl(path):
        if isinstance(paragraph, dict) and "header" in paragraph:
            continue
        where = "%s line %d" % (path, number)
        for i, qa in enumerate(_get(paragraph, "qas", list, where)):
            qa_where = "%s.qas[%d]" % (where, i)
            answers[str(_get(qa, "qid", str, qa_where))] = list(_eval_answers(qa, qa_where))
    return answers
