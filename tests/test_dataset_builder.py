"""Tests for pretrain/dataset_builder.py and the two build scripts, on the shared corpus.

The oracle for example packing is `reference_build` (dataset_reference.py): spec d.2
written out step by step, consuming the same seeded random stream. Statistical checks compute
what the algorithm implies for the actual line lengths instead of fixed shares.
"""

import hashlib
import math
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import tensorflow as tf

import build_openwebtext_pretraining_dataset
import build_pretraining_dataset
from dataset_reference import reference_build
from model import fast_tokenization, tokenization
from pretrain import dataset_builder as db

list_corpus_files = build_pretraining_dataset.list_corpus_files

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CORPUS, VOCAB = DATA / "corpus", DATA / "vocab" / "vocab.txt"
pytestmark = pytest.mark.skipif(not VOCAB.exists(), reason=f"shared data absent: {DATA}")
FILES = ("inaugural.txt", "state_union.txt")  # 0.8 MB + 2 MB of the shared corpus
MAX_LEN = 128


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.FullTokenizer(str(VOCAB))


def make_corpus(directory, names=FILES):
    os.makedirs(directory, exist_ok=True)
    for name in names:
        os.symlink(CORPUS / name, os.path.join(directory, name))
    return str(directory)


def config(output_dir, **kwargs):
    kwargs.setdefault("num_out_files", 3)
    kwargs.setdefault("tokenizer", "python")
    return db.BuildConfig(vocab_file=str(VOCAB), output_dir=str(output_dir), **kwargs)


def read_shard(path):
    """[(input_ids, input_mask, segment_ids)] of one TFRecord file."""
    rows = []
    for raw in tf.data.TFRecordDataset(str(path)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        rows.append(tuple(list(feature[k].int64_list.value)
                          for k in ("input_ids", "input_mask", "segment_ids")))
    return rows


def read_in_write_order(output_dir, num_out_files):
    """Examples of a 1-process dataset in write order (example n is in shard n % k)."""
    shards = [read_shard(os.path.join(output_dir, db.shard_name(i, num_out_files)))
              for i in range(num_out_files)]
    total = sum(map(len, shards))
    return [shards[n % num_out_files][n // num_out_files] for n in range(total)]


def events_of(paths, tokenizer, blanks_separate_docs=True):
    """Token-id lists for non-blank lines, None for a document boundary."""
    events = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            for line in f:
                line = line.strip()
                if line:
                    events.append(tokenizer.text_to_ids(line))
                elif blanks_separate_docs:
                    events.append(None)
        events.append(None)
    return events


def prob_no_second_segment(buffer, a_target, max_len):
    """P(example has no B) given its buffer, in two-segment mode, over the A/B coins."""
    def walk(index, a_len, b_started, prob):
        if index == len(buffer):
            return prob if (not b_started or min(a_len, max_len - 2) >= max_len - 3) else 0.0
        n = len(buffer[index])
        if a_len == 0 or a_len + n < a_target:
            return walk(index + 1, a_len + n, b_started, prob)
        if not b_started and a_len < a_target:  # the coin: heads joins A, tails starts B
            return (walk(index + 1, a_len + n, False, prob / 2)
                    + walk(index + 1, a_len, n > 0, prob / 2))
        return walk(index + 1, a_len, b_started or n > 0, prob)
    return walk(0, 0, False, 1.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
    """A 1-process build of two corpus files, plus the reference examples."""
    root = tmp_path_factory.mktemp("built")
    corpus = make_corpus(root / "corpus")
    metadata = db.build_dataset(config(root / "out"), list_corpus_files(corpus))
    rng = random.Random("0:0")
    paths = sorted(os.path.join(corpus, n) for n in FILES)
    rng.shuffle(paths)
    reference = reference_build(events_of(paths, tokenizer), rng, MAX_LEN,
                                tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"])
    return dict(out=root / "out", corpus=corpus, metadata=metadata, paths=paths,
                examples=read_in_write_order(root / "out", 3), reference=reference)


def test_examples_equal_reference_algorithm(built):
    examples, reference = built["examples"], built["reference"]
    assert len(examples) == len(reference) == built["metadata"]["num_examples"] > 1500
    for (ids, _, _), ref in zip(examples, reference):
        assert ids == ref["ids"] + [0] * (MAX_LEN - len(ref["ids"]))


def test_shards_equal_the_per_example_implementation(built):
    """SHA-256 of the shards the per-example implementation (commit 5c3a929) wrote."""
    digest = hashlib.sha256()
    for i in range(3):
        digest.update((built["out"] / db.shard_name(i, 3)).read_bytes())
    assert digest.hexdigest() == (
        "d648eec44e03c72f8807dee8dde8dd75db347e601b79569532eeb272626a3d1a")


def test_layout_segments_and_mask(built, tokenizer):
    cls_id, sep_id = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    for ids, mask, segments in built["examples"]:
        assert len(ids) == len(mask) == len(segments) == MAX_LEN
        length = sum(mask)
        assert mask == [1] * length + [0] * (MAX_LEN - length) and length >= 3
        assert ids[0] == cls_id and ids[length - 1] == sep_id
        assert ids[length:] == [0] * (MAX_LEN - length)
        seps = [i for i in range(length) if ids[i] == sep_id]
        assert seps[-1] == length - 1 and len(seps) in (1, 2) and seps[0] >= 2
        expected = [0] * (seps[0] + 1) + [1] * (length - seps[0] - 1) + [0] * (MAX_LEN - length)
        assert segments == expected


def test_tokens_follow_corpus_order(built, tokenizer):
    """Segment A of each example starts with a whole corpus line (or its prefix, if
    truncated), at a line after the previous example's first line."""
    lines = [event for event in events_of(built["paths"], tokenizer) if event]
    sep_id, line_no = tokenizer.vocab["[SEP]"], -1
    for ids, _, _ in built["examples"]:
        first = ids[1:ids.index(sep_id)]
        line_no += 1
        while line_no < len(lines) and first[:len(lines[line_no])] != lines[line_no][:len(first)]:
            line_no += 1
        assert line_no < len(lines), f"segment A {first[:8]}... starts no later corpus line"


def test_shares_consistent_with_algorithm(built):
    """Draw counts are Binomial(n, 0.1) / (n, 0.05); the share of examples without B
    matches what the algorithm implies for these very line lengths."""
    n, meta = len(built["examples"]), built["metadata"]
    for count, p in ((meta["single_segment_examples"], 0.1), (meta["random_target_lengths"], 0.05)):
        assert abs(count - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), (count, n, p)
    probs = [0.1 + 0.9 * prob_no_second_segment(r["buffer"], r["two_seg_target"], MAX_LEN)
             for r in built["reference"]]
    observed = sum(1 for _, _, segments in built["examples"] if 1 not in segments)
    expected, sd = sum(probs), math.sqrt(sum(p * (1 - p) for p in probs))
    assert abs(observed - expected) < 4.5 * sd + 1, (observed, expected, sd)
    # Full-length targets always yield full examples; short ones need a draw or a flush.
    short = sum(1 for (_, mask, _), r in zip(built["examples"], built["reference"])
                if sum(mask) < MAX_LEN and not r["flushed"])
    assert short <= meta["random_target_lengths"]


def test_reproducible_with_seed_and_metadata(built, tmp_path):
    db.build_dataset(config(tmp_path / "again"), list_corpus_files(built["corpus"]))
    for i in range(3):
        name = db.shard_name(i, 3)
        assert (tmp_path / "again" / name).read_bytes() == (built["out"] / name).read_bytes()
    meta = db.load_metadata(str(tmp_path / "again"))
    assert meta == built["metadata"]
    assert meta["max_seq_length"] == MAX_LEN and meta["vocab_sha256"].startswith("07eced37")
    assert sum(meta["examples_per_file"].values()) == meta["num_examples"]
    db.build_dataset(config(tmp_path / "other", seed=1), list_corpus_files(built["corpus"]))
    assert read_in_write_order(tmp_path / "other", 3) != built["examples"]


def test_parallel_run_equals_its_jobs_run_one_by_one(tmp_path):
    """2 processes: job j writes shards i % 2 == j from files k % 2 == j, and the result
    does not depend on scheduling (it equals running each job alone)."""
    corpus = make_corpus(tmp_path / "corpus")
    inputs = list_corpus_files(corpus)
    cfg = config(tmp_path / "par", num_processes=2, num_out_files=4)
    metadata = db.build_dataset(cfg, inputs)
    seq_cfg = config(tmp_path / "seq", num_processes=2, num_out_files=4)
    os.makedirs(seq_cfg.output_dir)
    for job_id in range(2):
        result = db.run_job(job_id, seq_cfg, inputs)
        assert sorted(result.shard_counts) == [db.shard_name(i, 4) for i in range(job_id, 4, 2)]
        for temp, final in result.temp_to_final.items():
            name = os.path.basename(final)
            assert Path(temp).read_bytes() == (tmp_path / "par" / name).read_bytes()
            assert metadata["examples_per_file"][name] == result.shard_counts[name] > 0


@pytest.mark.skipif(not fast_tokenization.available(), reason="tensorflow-text not installed")
def test_fast_tokenizer_path_gives_identical_shards(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", names=FILES[:1])
    # Invalid UTF-8, control characters and U+FFFD must not change anything either.
    (tmp_path / "corpus" / "zz_bytes.txt").write_bytes(
        b"caf\xc3\xa9 \xff\xfe broken\x00 bytes \xef\xbf\xbd here\n\nsecond\x07 doc\n")
    for kind in ("python", "fast"):
        meta = db.build_dataset(config(tmp_path / kind, tokenizer=kind),
                                list_corpus_files(corpus))
        assert meta["tokenizer"] == kind
    for i in range(3):
        name = db.shard_name(i, 3)
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "python" / name).read_bytes()


def test_invalid_utf8_is_replaced_and_dropped(tmp_path, tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"caf\xc3\xa9 \xff\xfebroken bytes\x00 here\n")
    db.build_dataset(config(tmp_path / "out", num_out_files=1), list_corpus_files(str(corpus)))
    (ids, mask, _), = read_shard(tmp_path / "out" / db.shard_name(0, 1))
    # As the reference's decode(errors="ignore"): the bad bytes vanish, joining "broken".
    expected = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("café broken bytes here"))
    assert ids[:sum(mask)] == [tokenizer.vocab["[CLS]"]] + expected + [tokenizer.vocab["[SEP]"]]


def _write_owt(data_dir, documents, members_per_archive=3):
    """openwebtext/*.xz archives, each an xz tar of one-document .txt files."""
    owt = Path(data_dir) / "openwebtext"
    owt.mkdir(parents=True)
    os.symlink(VOCAB, Path(data_dir) / "vocab.txt")
    for a in range(0, len(documents), members_per_archive):
        with tarfile.open(owt / f"urlsf_subset{a:02d}.xz", "w:xz") as tar:
            for k, text in enumerate(documents[a:a + members_per_archive]):
                member = Path(data_dir) / f"doc{a + k}.txt"
                member.write_text(text, encoding="utf-8")
                tar.add(member, arcname=f"{a + k:04d}-{k}.txt")
    return sorted(str(p) for p in owt.iterdir())


def test_openwebtext_layout_and_document_boundaries(tmp_path, tokenizer):
    text = (CORPUS / FILES[0]).read_text(encoding="utf-8")
    # Documents keep inner blank lines, which must NOT split them.
    documents = [d.replace(". ", ".\n\n", 3) for d in text.split("\n\n")[:8]]
    archives = _write_owt(tmp_path, documents)
    argv = ["--data-dir", str(tmp_path), "--num-out-files", "2", "--tokenizer", "python"]
    assert build_openwebtext_pretraining_dataset.main(argv) == 0
    out = tmp_path / "pretrain_tfrecords"
    meta = db.load_metadata(str(out))
    assert meta["blanks_separate_docs"] is False and meta["num_input_files"] == len(archives)
    assert not list(Path(tempfile.gettempdir()).glob("electra_owt_*"))  # temp dirs removed
    rng = random.Random("0:0")
    rng.shuffle(archives)
    reference, state = [], {}
    for archive in archives:  # members are shuffled only when their archive is reached
        with tarfile.open(archive, "r:xz") as tar:
            names = sorted(m.name for m in tar.getmembers())
        rng.shuffle(names)
        events = []
        for name in names:
            lines = documents[int(name[:4])].split("\n")
            events += [tokenizer.text_to_ids(line) for line in lines if line.strip()] + [None]
        reference += reference_build(events, rng, MAX_LEN, tokenizer.vocab["[CLS]"],
                                     tokenizer.vocab["[SEP]"], state)
    examples = read_in_write_order(out, 2)
    padded = [r["ids"] + [0] * (MAX_LEN - len(r["ids"])) for r in reference]
    assert [e[0] for e in examples] == padded
    assert len(examples) == meta["num_examples"] == sum(meta["examples_per_file"].values())


def run_cli(argv, capsys):
    code = build_pretraining_dataset.main(argv)
    return code, capsys.readouterr().err


def cli_args(corpus, out, *extra):
    return ["--corpus-dir", str(corpus), "--vocab-file", str(VOCAB), "--output-dir", str(out),
            "--num-out-files", "2", "--tokenizer", "python", *extra]


def test_bad_corpus_dirs_give_one_clear_error(tmp_path, capsys):
    code, err = run_cli(cli_args(tmp_path / "missing", tmp_path / "out"), capsys)
    assert code == 2 and "is not a directory" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, err = run_cli(cli_args(tmp_path / "empty", tmp_path / "out"), capsys)
    assert code == 2 and "holds no text files" in err
    (tmp_path / "empty" / "a.txt").write_text("")
    code, err = run_cli(cli_args(tmp_path / "empty", tmp_path / "out"), capsys)
    assert code == 2 and "only empty files" in err
    (tmp_path / "empty" / "a.txt").write_text("\n \n\x00\x01\n")  # nothing the tokenizer keeps
    code, err = run_cli(cli_args(tmp_path / "empty", tmp_path / "out"), capsys)
    assert code == 2 and "No examples were built" in err
    assert not (tmp_path / "out" / db.METADATA_NAME).exists()
    assert os.listdir(tmp_path / "out") == []  # the empty shards were not published


def test_bad_vocab_and_lengths_give_one_clear_error(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", names=FILES[:1])
    vocab = tmp_path / "sp_vocab.txt"
    vocab.write_text("<unk>\n<s>\n</s>\nthe\n")
    argv = cli_args(corpus, tmp_path / "out")
    argv[argv.index("--vocab-file") + 1] = str(vocab)
    code, err = run_cli(argv, capsys)
    assert code == 2 and "lacks the special token" in err and "[PAD]" in err
    for length in ("7", "513"):
        code, err = run_cli(cli_args(corpus, tmp_path / "out", "--max-seq-length", length), capsys)
        assert code == 2 and f"--max-seq-length {length} is out of range" in err
    code, err = run_cli(cli_args(corpus, tmp_path / "out", "--num-processes", "3"), capsys)
    assert code == 2 and "--num-out-files (2) must be at least --num-processes (3)" in err
    assert not (tmp_path / "out").exists()


def test_shortest_length_builds_valid_examples(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", names=FILES[:1])
    db.build_dataset(config(tmp_path / "out", max_seq_length=8, num_out_files=1),
                     list_corpus_files(corpus))
    rows = read_shard(tmp_path / "out" / db.shard_name(0, 1))
    assert len(rows) > 1000 and all(len(ids) == 8 and ids[0] == 101 for ids, _, _ in rows)


@pytest.mark.parametrize("text, value", [("true", True), ("False", False), ("no", False),
                                         ("yes", True), ("0", False), ("1", True)])
def test_blanks_separate_docs_flag_parses_booleans(text, value):
    assert build_pretraining_dataset.str_to_bool(text) is value


def test_blanks_separate_docs_flag_rejects_junk(capsys):
    with pytest.raises(SystemExit):
        build_pretraining_dataset.main(cli_args("c", "o", "--blanks-separate-docs", "maybe"))
    assert "expected true/false" in capsys.readouterr().err


def test_output_dir_with_foreign_files_is_refused_and_kept(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", names=FILES[:1])
    out = tmp_path / "out"
    out.mkdir()
    for name in ("notes.txt", "model.ckpt-1.index", "pretrain_data.tfrecord-x"):
        (out / name).write_text("keep me")
    code, err = run_cli(cli_args(corpus, out), capsys)
    assert code == 2 and "did not write" in err
    assert "notes.txt" in err and "model.ckpt-1.index" in err
    kept = ["model.ckpt-1.index", "notes.txt", "pretrain_data.tfrecord-x"]
    assert sorted(os.listdir(out)) == kept
    assert all((out / n).read_text() == "keep me" for n in os.listdir(out))


def test_interrupted_run_then_rerun_equals_uninterrupted(tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path / "corpus", names=FILES[:1])
    inputs = list_corpus_files(corpus)
    db.build_dataset(config(tmp_path / "clean"), inputs)
    out = tmp_path / "out"
    real, calls = tf.io.TFRecordWriter, []

    class FailingWriter(real):
        def write(self, record):
            calls.append(1)
            if len(calls) == 300:
                raise KeyboardInterrupt("simulated kill mid-write")
            super().write(record)

    monkeypatch.setattr(db.tf.io, "TFRecordWriter", FailingWriter)
    with pytest.raises(KeyboardInterrupt):
        db.build_dataset(config(out), inputs)
    monkeypatch.undo()
    assert os.listdir(out) == []  # no partial shard under a final name, temporaries gone
    # Leftovers of a SIGKILLed run and of an older run with other flags are replaced.
    (out / ".pretrain_data.tfrecord-1-of-3.tmp-999-dead").write_bytes(b"partial")
    (out / "pretrain_data.tfrecord-7-of-9").write_bytes(b"old")
    (out / db.METADATA_NAME).write_text("{}")
    db.build_dataset(config(out), inputs)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "clean"))
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_killed_process_then_rerun_equals_uninterrupted(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", names=FILES[1:])
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, str(REPO / "build_pretraining_dataset.py"),
                                *cli_args(corpus, out)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if out.exists() and any(n.startswith(".") for n in os.listdir(out)):
            break  # shards are open: the run is mid-way
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / db.METADATA_NAME).exists(), "the run finished before it could be killed"
    assert not any(n.startswith("pretrain_data.tfrecord") for n in os.listdir(out))
    inputs = list_corpus_files(corpus)
    db.build_dataset(config(out, num_out_files=2), inputs)
    db.build_dataset(config(tmp_path / "clean", num_out_files=2), inputs)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "clean"))
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_openwebtext_unsafe_or_broken_archives_are_refused(tmp_path, capsys):
    archives = _write_owt(tmp_path, ["a document.\n"])
    with tarfile.open(archives[0], "w:xz") as tar:
        tar.add(tmp_path / "doc0.txt", arcname="../escape.txt")
    argv = ["--data-dir", str(tmp_path), "--num-out-files", "1", "--tokenizer", "python"]
    assert build_openwebtext_pretraining_dataset.main(argv) == 2
    assert "Refusing to extract" in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    Path(archives[0]).write_bytes(b"not xz at all")
    assert build_openwebtext_pretraining_dataset.main(argv) == 2
    assert "must be an xz-compressed tar" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert build_openwebtext_pretraining_dataset.main(["--data-dir", str(tmp_path / "empty")]) == 2
    assert "No *.xz archives" in capsys.readouterr().err
