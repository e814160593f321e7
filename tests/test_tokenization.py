"""Tests for model/tokenization.py: exact outputs, vocab errors, and identity with BERT's code.

The oracle is the `bert-tensorflow` PyPI package, which ships google-research/bert's
tokenization.py verbatim. ELECTRA's copy differs from it in exactly these ways, which the
`oracle` fixture applies (a few one-line patches, no copied code):
  * `_is_control` counts every category C* as control (BERT: only Cc and Cf), so private
    use, unassigned and surrogate code points are dropped;
  * `strip_accents=False` skips accent stripping when lower-casing (BERT always strips);
  * `load_vocab` gives a repeated token its *last* line number (bert-tensorflow 1.0.4
    keeps the first), tested separately on a hand-made vocab;
  * no `preserve_unused_tokens` flag (its default, False, is what ELECTRA does).
"""

import os
import unicodedata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from model import tokenization
from model.tokenization import (BasicTokenizer, FullTokenizer, VocabError,
                                WordpieceTokenizer, load_vocab)
from util.cli import UserError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = DATA / "vocab" / "vocab.txt"
CORPUS = sorted((DATA / "corpus").glob("*.txt"))
needs_data = pytest.mark.skipif(not VOCAB.is_file() or not CORPUS,
                                reason=f"shared data (vocab, corpus) not found under {DATA}")

SMALL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa",
               "un", "runn", "##ing", ","]
CONFIGS = [(True, True), (True, False), (False, True)]  # (do_lower_case, strip_accents)

HARD_CASES = [
    "Naïve café Ångström São Paulo résumé ﬁancé",
    "ÀÉÎÕÜ àéîõü ÇçÑñ",
    "İstanbul ΟΔΟΣ ΣΊΣΥΦΟΣ. Σ Σ. aΣ aΣb",  # dotted I, Greek final sigma
    "中文字符 漢字かなカナ한국어 𠀋𪜀 兀",  # CJK incl. extension B and a compatibility ideograph
    "emoji 😀👍🏽 👨‍👩‍👧 ❤️ flags 🇺🇸",
    "a\x00b\x01c\x7fd\x1fe\x0bf\x0cg",  # NUL and ASCII controls are deleted
    "zero\u200bwidth\u200cjoin\u200dx\ufeffy replace\ufffdchar",
    "x" * 200, "y" * 201, "unwanted" * 30,  # 200-character limit
    "[SEP] [CLS] [MASK] [PAD] [UNK] [unused0]",
    "e\u0301 a\u0300\u0316 \u0301 \u20dd \u0301\u0302",  # combining marks (Mn, Me)
    "non\u00a0breaking\u2009thin\u3000ideographic\u202fnarrow",
    "tab\tnew\nline\rcr\u2028ls\u2029ps\x85nel",
    "\ue000private\U000f0000use \U000e0001tag \ud800surrogate \u0378unassigned",
    "\u1fef\u1fed\u0387\u037e",  # NFD turns U+1FEF (not punctuation) into "`"
    "\u212a\u2126 \uff21\uff42\uff43 \u00bd\u00b2 \u2160",  # Kelvin, Ohm, fullwidth
    "don't stop—believin’ “quoted” …", "$5^2`~|<>=+",
    "مرحبا بالعالم हिन्दी ภาษาไทย",
    "   ", "", "##a ##",
]


@pytest.fixture(scope="module")
def oracle():
    """make(do_lower_case, strip_accents) -> bert-tensorflow FullTokenizer with ELECTRA's rules."""
    bert_tok = pytest.importorskip("bert.tokenization",
                                   reason="bert-tensorflow (BERT's tokenizer) not installed")

    def electra_is_control(char):
        return char not in "\t\n\r" and unicodedata.category(char).startswith("C")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bert_tok, "_is_control", electra_is_control)
        patch.setattr(bert_tok, "preserve_token", lambda token, vocab: False)

        def make(do_lower_case, strip_accents=True):
            tok = bert_tok.FullTokenizer(str(VOCAB), do_lower_case=do_lower_case)
            if do_lower_case and not strip_accents:
                tok.basic_tokenizer._run_strip_accents = lambda text: text
            return tok
        yield make


def write_vocab(tmp_path, tokens, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def test_full_tokenizer_small_vocab(tmp_path):
    tok = FullTokenizer(write_vocab(tmp_path, SMALL_VOCAB))
    tokens = tok.tokenize("UNwant\u00e9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tok.convert_tokens_to_ids(tokens) == [9, 6, 7, 12, 10, 11]
    assert tok.text_to_ids("UNwant\u00e9d,running") == [9, 6, 7, 12, 10, 11]
    assert tok.convert_ids_to_tokens([9, 6, 7]) == ["un", "##want", "##ed"]
    assert tok.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    with pytest.raises(KeyError):
        tok.convert_tokens_to_ids(["nope"])


def test_basic_tokenizer_casing_and_accents():
    text = " \tHeLLo!how  \n Are yoU?  H\u00e9llo "
    assert BasicTokenizer(True, True).tokenize(text) == ["hello", "!", "how", "are", "you", "?",
                                                         "hello"]
    assert BasicTokenizer(True, False).tokenize(text)[-1] == "h\u00e9llo"
    # Accents are never stripped without lower-casing, whatever strip_accents says.
    assert BasicTokenizer(False, True).tokenize(text) == ["HeLLo", "!", "how", "Are", "yoU", "?",
                                                          "H\u00e9llo"]


def test_basic_tokenizer_special_characters():
    basic = BasicTokenizer()
    assert basic.tokenize("ah\u535a\u63a8zz") == ["ah", "\u535a", "\u63a8", "zz"]
    assert basic.tokenize("[SEP] x") == ["[", "sep", "]", "x"]  # no never-split list
    assert basic.tokenize("a\x05b\u200bc\ufffdd\x00e") == ["abcde"]  # deleted, not split
    assert basic.tokenize("a\u00a0b\tc\u2028d") == ["a", "b", "c", "d"]
    assert basic.tokenize("a\ue000b") == ["ab"]  # private use (Co): ELECTRA's C* rule
    assert basic.tokenize("$^`\u00bf") == ["$", "^", "`", "\u00bf"]
    assert basic.tokenize("e\u0301") == ["e"]


def test_wordpiece_tokenizer(tmp_path):
    vocab = load_vocab(write_vocab(tmp_path, SMALL_VOCAB))
    wp = WordpieceTokenizer(vocab)
    assert wp.tokenize("") == []
    assert wp.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert wp.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    assert WordpieceTokenizer(vocab, max_input_chars_per_word=8).tokenize("unwanted") == \
        ["un", "##want", "##ed"]
    assert WordpieceTokenizer(vocab, max_input_chars_per_word=7).tokenize("unwanted") == ["[UNK]"]
    # Bytes are decoded with errors="ignore" like the reference ("replace" would give a
    # U+FFFD inside the word and so [UNK]).
    assert wp.tokenize(b"un\xffwanted") == ["un", "##want", "##ed"]
    with pytest.raises(ValueError, match="str or UTF-8 bytes"):
        wp.tokenize(3)


def test_load_vocab_line_numbers(tmp_path):
    lines = ["[PAD]", " [UNK] ", "[CLS]\r", "", "[SEP]", "dup", "[MASK]", "dup\t"]
    path = tmp_path / "v.txt"
    path.write_bytes("\n".join(lines).encode())  # no newline after the last token
    vocab = load_vocab(path)
    assert list(vocab.items()) == [("[PAD]", 0), ("[UNK]", 1), ("[CLS]", 2), ("", 3), ("[SEP]", 4),
                                   ("dup", 7), ("[MASK]", 6)]
    inv_vocab = FullTokenizer(path).inv_vocab
    assert inv_vocab[7] == "dup" and 5 not in inv_vocab


def test_load_vocab_errors(tmp_path):
    with pytest.raises(VocabError, match="not found.*build_vocab.py"):
        load_vocab(tmp_path / "missing.txt")
    with pytest.raises(VocabError, match=r"lacks the special token\(s\) \[CLS\], \[MASK\]"):
        load_vocab(write_vocab(tmp_path, ["[PAD]", "[UNK]", "[SEP]", "a"]))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"[PAD]\n[UNK]\n\xff\n")
    with pytest.raises(VocabError, match="not valid UTF-8"):
        load_vocab(bad)
    # A util.cli.UserError (still a ValueError): the scripts print one line, exit 2.
    assert issubclass(VocabError, UserError) and issubclass(VocabError, ValueError)


@needs_data
def test_shared_vocab_special_ids():
    vocab = load_vocab(VOCAB)
    assert len(vocab) == 30522
    assert [vocab[t] for t in tokenization.SPECIAL_TOKENS] == [0, 100, 101, 102, 103]


@needs_data
@pytest.mark.parametrize("lower,strip", CONFIGS)
def test_hard_cases_match_reference(oracle, lower, strip):
    ref, ours = oracle(lower, strip), FullTokenizer(VOCAB, lower, strip)
    for text in HARD_CASES + [t.encode("utf-8", "surrogatepass") for t in HARD_CASES] + \
            [b"caf\xc3\xa9 \xff\xfeok \xc3"]:
        assert ours.tokenize(text) == ref.tokenize(text), text
        assert ours.text_to_ids(text) == ref.convert_tokens_to_ids(ref.tokenize(text)), text


def _code_point_lines(code_points):
    """One line per 16 code points, each shown in several contexts (inside words, next to
    cased Greek/Turkish letters and a combining mark, next to punctuation)."""
    chars = [chr(c) for c in code_points]
    pieces = [f"a{c}B {c}\u039f\u03a3{c}. \u0130{c}x{c}\u0301 " for c in chars]
    return ["".join(pieces[i:i + 16]) for i in range(0, len(pieces), 16)]


@needs_data
@pytest.mark.parametrize("lower,strip", CONFIGS)
def test_every_bmp_code_point_matches_reference(oracle, lower, strip):
    extra = [*range(0x1F000, 0x1FB00), *range(0x20000, 0x2FA20, 97), *range(0xE0000, 0xE0080),
             *range(0xF0000, 0xF0100), *range(0x10FFF0, 0x110000)]
    lines = _code_point_lines([*range(0x10000), *extra])
    ascii_pairs = [" ".join(f"a{chr(c)}B{chr(d)} {chr(c)}{chr(d)}x" for d in range(128))
                   for c in range(128)]
    ref, ours = oracle(lower, strip), FullTokenizer(VOCAB, lower, strip)
    for line in lines + ascii_pairs:
        assert ours.tokenize(line) == ref.tokenize(line), ascii(line)


@needs_data
@pytest.mark.parametrize("lower,strip", CONFIGS)
def test_corpus_sample_matches_reference(oracle, lower, strip):
    # The reference runs at ~0.6 MB/s, so it sees every 20th line plus every line that
    # is not plain printable ASCII; tests/test_fast_tokenization.py compares all lines of
    # the corpus between FastTokenizer and this tokenizer.
    lines = []
    for path in CORPUS:
        file_lines = path.read_text(encoding="utf-8").split("\n")
        lines += [line for i, line in enumerate(file_lines)
                  if i % 20 == 0 or not line.isascii() or not line.isprintable()]
    assert len(lines) > 19000
    ref, ours = oracle(lower, strip), FullTokenizer(VOCAB, lower, strip)
    expected = [ref.convert_tokens_to_ids(ref.tokenize(line)) for line in lines]
    assert [ours.text_to_ids(line) for line in lines] == expected
    assert [ours.tokenize(line) for line in lines[:2000]] == [ref.tokenize(l) for l in lines[:2000]]
