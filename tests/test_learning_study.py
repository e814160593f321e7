"""Tests of experiments/learning_study.py: FLOPs hand count, config rules, task
subsampling, and the --quick study end to end with resuming (files, not scores)."""

import json
import os
import re
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

import configure_pretraining
from experiments import (finetune_variant, learning_study, study_config, study_data,
                         study_flops)
from experiments.study_units import StudyDirs
from finetune_fixtures import SHARED_DATA, require_shared_data
from model import tokenization
from util import cli
from util.config_utils import ConfigError

# The end-to-end run keeps one task per family (classification with MCC, regression,
# tagging) so it stays within about two minutes on 2 cores; QUICK itself runs all six.
E2E_TASKS = ["cola", "sts", "chunk"]
E2E_HPARAMS = json.dumps({"tasks": E2E_TASKS})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_flops_hand_count():
    """B=2, S=8, H=4, L=1, F=16, E=4, V=10, generator hidden 2 (E->G projection), N=1."""
    hparams = {"model_hparam_overrides": {"hidden_size": 4, "num_hidden_layers": 1,
                                          "num_attention_heads": 1, "intermediate_size": 16},
               "embedding_size": 4, "vocab_size": 10, "generator_hidden_size": 0.5,
               "max_seq_length": 8, "train_batch_size": 2}
    electra = configure_pretraining.make_config("", "e", hparams)
    mlm = configure_pretraining.make_config("", "m", {**hparams, "electra_objective": False})
    assert electra.max_predictions_per_seq == 1
    disc_token = 4 * 4 * 4 + 2 * 4 * 16 + 2 * 8 * 4  # QKV+out, FFN, scores+context
    disc_head_token = 4 * 4 + 4
    gen_token = 4 * 2 + (4 * 2 * 2 + 2 * 2 * 8 + 2 * 8 * 2)  # projection + one layer
    gen_head_slot = 2 * 4 + 4 * 10
    macs = 2 * 8 * (disc_token + disc_head_token + gen_token) + 2 * 1 * gen_head_slot
    assert macs == 5920
    assert study_flops.train_flops_per_step(electra) == 6 * 5920
    mlm_head_slot = 4 * 4 + 4 * 10
    assert study_flops.train_flops_per_step(mlm) == 6 * (2 * 8 * disc_token + 2 * mlm_head_slot)


def test_quick_config_and_equal_flops_schedule():
    study = study_config.make_study_config(quick=True)
    assert (study.hidden_size, study.num_hidden_layers, study.num_attention_heads,
            study.intermediate_size, study.embedding_size) == (32, 2, 1, 128, 32)
    assert study.checkpoint_steps == (10, 20) and study.electra_steps == 20
    ratio = (study_flops.study_flops_per_step(study, "electra")
             / study_flops.study_flops_per_step(study, "mlm"))
    assert study.mlm_steps == round(20 * ratio)
    assert study.mlm_checkpoint_steps[-1] == study.mlm_steps
    interval = study_config.save_interval(study.mlm_checkpoint_steps)
    assert all(s % interval == 0 for s in study.mlm_checkpoint_steps[:-1])
    explicit = study_config.make_study_config(True, {"mlm_steps": 30,
                                                     "mlm_checkpoint_steps": [15, 30]})
    assert (explicit.mlm_steps, explicit.mlm_checkpoint_steps) == (30, (15, 30))


@pytest.mark.parametrize("hparams, message", [
    ({"hiden_size": 8}, "unknown hparam 'hiden_size' for StudyConfig"),
    ({"electra_steps": "20"}, "expects int"),
    ({"checkpoint_steps": [10, 15]}, "must end at electra_steps"),
    ({"tasks": ["cola", "qqp"]}, "tasks must list distinct tasks"),
    ({"train_examples": {"cola": 0}}, r"train_examples\['cola'\] must be an int >= 1"),
    ({"task_hparams": {"rte": {"seed": 3}}}, "which the study sets itself"),
    ({"task_hparams": {"rte": {"num_train_epoch": 3}}}, "unknown hparam 'num_train_epoch'"),
    ({"corpus_vocab_size": 50}, "corpus_vocab_size must be at least 100"),
    ({"corpus_vocab_size": 8000, "vocab_size": 4000}, "vocab_size 4000 is smaller"),
    ({"pretrain_dropout": 1.0}, r"pretrain_dropout must be in \[0, 1\)"),
    ({"temperature": 0.0}, "temperature must be > 0"),
])
def test_config_errors(hparams, message):
    with pytest.raises(ConfigError, match=message):
        study_config.make_study_config(True, hparams)


def test_vocab_size_and_pretraining_dropout_are_derived_and_applied():
    shared = study_config.make_study_config(True, {"corpus_vocab_size": None})
    assert shared.vocab_size == study_config.SHARED_VOCAB_SIZE == 30522
    own = study_config.make_study_config(True, {"corpus_vocab_size": 3000,
                                                "pretrain_dropout": 0.0, "temperature": 2.0})
    assert own.vocab_size == 3000
    for objective in ("electra", "mlm"):
        hparams = own.pretrain_hparams(objective)
        assert hparams["vocab_size"] == 3000 and hparams["temperature"] == 2.0
        overrides = hparams["model_hparam_overrides"]
        assert overrides["hidden_dropout_prob"] == overrides["attention_probs_dropout_prob"] == 0
    # Fine-tuning keeps the model's own dropout: the study only changes pre-training.
    assert "hidden_dropout_prob" not in own.model_hparam_overrides()


def test_corpus_vocab_is_learnt_once_from_the_corpus(tmp_path):
    require_shared_data()
    study = study_config.make_study_config(True, {"corpus_vocab_size": 2000})
    dirs = StudyDirs(str(tmp_path), str(SHARED_DATA), str(tmp_path / "out"), corpus_vocab=True)
    assert study_data.build_corpus_vocab(study, dirs) == 2000
    vocab = tokenization.load_vocab(dirs.vocab_file)
    assert dirs.vocab_file == str(tmp_path / "vocab.txt") and len(vocab) == 2000
    assert all(t in vocab for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
    tokenizer = tokenization.FullTokenizer(dirs.vocab_file)
    pieces = tokenizer.tokenize("Fellow-Citizens of the Senate and of the House")
    assert "[UNK]" not in pieces and "the" in pieces  # learnt from inaugural.txt
    written = os.stat(dirs.vocab_file).st_mtime_ns
    assert study_data.build_corpus_vocab(study, dirs) == 2000  # a resumed study keeps it
    assert os.stat(dirs.vocab_file).st_mtime_ns == written
    # The shared vocab is then not needed: only a missing corpus/task file is an error.
    missing = tmp_path / "no_shared"
    with pytest.raises(cli.UserError) as err:
        study_data.check_shared_data(study, str(missing))
    assert str(missing / "vocab" / "vocab.txt") not in str(err.value)
    assert str(missing / "glue" / "CoLA" / "train.tsv") in str(err.value)


def test_subsampling_keeps_headers_lines_and_sentences(tmp_path):
    require_shared_data()
    study = study_config.make_study_config(True, {"train_examples": {"mrpc": 5, "chunk": 3},
                                                  "dev_examples": {"chunk": 2}})
    for task in ("mrpc", "chunk"):
        study_data.write_task_dir(study, task, str(SHARED_DATA), str(tmp_path))
    source = (SHARED_DATA / "glue" / "MRPC" / "train.tsv").read_text(encoding="utf-8")
    written = (tmp_path / "mrpc" / "train.tsv").read_text(encoding="utf-8")
    lines = written.splitlines(keepends=True)
    assert len(lines) == 6 and lines[0] == source.splitlines(keepends=True)[0]
    source_rows = source.splitlines(keepends=True)[1:]
    positions = [source_rows.index(line) for line in lines[1:]]
    assert positions == sorted(positions)  # original rows, in file order
    chunk_train = (tmp_path / "chunk" / "train.txt").read_text(encoding="utf-8")
    sentences = chunk_train.strip("\n").split("\n\n")
    assert len(sentences) == 3 and chunk_train.endswith("\n\n")
    source_chunk = (SHARED_DATA / "chunk" / "train.txt").read_text(encoding="utf-8")
    assert all("\n" + s + "\n" in "\n" + source_chunk for s in sentences)
    dev = (tmp_path / "chunk" / "dev.txt").read_text(encoding="utf-8")
    assert len(dev.strip("\n").split("\n\n")) == 2  # dev.txt comes from CoNLL test.txt
    again = study_data.subsample_conll(str(SHARED_DATA / "chunk" / "train.txt"), 3, "0:chunk:train")
    assert again[0] == chunk_train  # seeded: the same rows every time


def test_missing_shared_data_is_one_clear_error(tmp_path, capsys):
    argv = ["--quick", "--work-dir", str(tmp_path / "w"), "--shared-data", str(tmp_path / "no")]
    with pytest.raises(SystemExit) as exit_info:
        cli.run_main(lambda: learning_study.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "no" / "vocab" / "vocab.txt") in err and "--shared-data" in err
    assert not (tmp_path / "w").exists()


def _run(capsys, work, out, *extra):
    learning_study.main(["--quick", "--work-dir", str(work), "--out-dir", str(out),
                         "--shared-data", str(SHARED_DATA), "--hparams", E2E_HPARAMS, *extra])
    return capsys.readouterr().out


def _mtimes(work):
    return {p: p.stat().st_mtime_ns for p in (work / "units").rglob("*.json")}


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100


def _check_report(out, study):
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "flops_per_step", "pretraining", "pretrain_eval",
                            "finetune", "rows"}
    assert results["config"]["tasks"] == E2E_TASKS
    assert [r["init"] for r in results["rows"]] == [
        "random", "electra_10", "electra_20", "mlm_10", f"mlm_{study.mlm_steps}"]
    for row in results["rows"]:
        seeds = 1 if row["init"] in ("electra_10", "mlm_10") else 2
        assert all(len(results["finetune"][f"{row['init']}__{t}"]["scores"]) == seeds
                   for t in E2E_TASKS)
        assert row["average"] is not None
    assert set(results["pretrain_eval"]["electra"]) == {"10", "20"}
    assert "disc_auc" in results["pretrain_eval"]["electra"]["20"]
    table = (out / "results.md").read_text()
    assert ("the shared 30522-token vocab; peak LR 0.001 with 5 warmup steps, pre-training "
            "dropout 0.1, generator sampling temperature 1.") in table
    header = ("| init | pre-training steps | pre-training TFLOP | pre-training s | cola MCC | "
              "sts Spearman | chunk F1 | average |")
    assert header in table
    for label in ("random init", "ELECTRA @ 10", "ELECTRA @ 20", "MLM @ 10",
                  f"MLM @ {study.mlm_steps}"):
        assert re.search(rf"^\| {label} \|( [^|]+ \|){{7}}$", table, re.M), label
    for name in ("downstream_average.png", "downstream_tasks_steps.png",
                 "downstream_tasks_flops.png", "pretrain_metrics.png"):
        _check_png(out / name)


def _check_restore(capsys, tmp_path, work, out):
    """A new work dir restored from the report holds the same unit records and renders
    the same table; an objective with a unit missing from the report is not restored."""
    original = {p.relative_to(work): json.loads(p.read_text())
                for p in (work / "units").rglob("*.json") if p.parent.name != "data"
                and p.parent.name != "flops"}
    new_work, new_out = tmp_path / "new_work", tmp_path / "new_report"
    report = out / "results.json"
    log = _run(capsys, new_work, new_out, "--stages", "report",
               "--restore-from-report", str(report))
    assert f"[restore] {len(original)} unit records restored" in log
    restored = {p.relative_to(new_work): json.loads(p.read_text())
                for p in (new_work / "units").rglob("*.json")}
    assert restored == original
    assert (new_out / "results.md").read_text() == (out / "results.md").read_text()

    partial = json.loads(report.read_text())
    del partial["finetune"]["mlm_10__sts"]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    partial_work = tmp_path / "partial_work"
    _run(capsys, partial_work, tmp_path / "partial_report", "--stages", "report",
         "--restore-from-report", str(tmp_path / "partial.json"))
    assert (partial_work / "units" / "pretrain" / "electra.json").exists()
    assert not (partial_work / "units" / "pretrain" / "mlm.json").exists()  # runs again
    assert not (partial_work / "units" / "finetune" / "mlm_10__sts.json").exists()
    with pytest.raises(cli.UserError, match="no file .*missing.json"):
        _run(capsys, partial_work, new_out, "--restore-from-report",
             str(tmp_path / "missing.json"))


def _check_variant(work):
    """finetune_variant with the study's own settings reproduces the study's unit; other
    settings are recorded under their own name; bad --init / --task are clear errors."""
    base = ["--quick", "--work-dir", str(work), "--hparams", E2E_HPARAMS, "--shared-data",
            str(SHARED_DATA), "--task", "cola", "--seeds", "1", "--init"]
    final = work / "units" / "finetune" / "electra_20__cola.json"
    unit = json.loads(final.read_text())
    final.unlink()
    same = finetune_variant.main([*base, "electra_20"])
    assert same["scores"] == unit["scores"][:1] and same["metric"] == "mcc"
    assert not final.exists()  # 1 of the final's 2 seeds: not the study's unit
    final.write_text(json.dumps(unit))
    # A curve point (1 seed) whose unit is lost: a variant with other settings does not
    # replace it; one with the study's own settings is that unit, seed for seed.
    lost = work / "units" / "finetune" / "electra_10__cola.json"
    curve_unit = json.loads(lost.read_text())
    lost.unlink()
    other = finetune_variant.main([*base, "electra_10", "--learning-rate", "0.01",
                                   "--layerwise-lr-decay", "1.0"])
    assert (other["learning_rate"], other["layerwise_lr_decay"]) == (0.01, 1.0)
    assert not lost.exists()
    adopted = finetune_variant.main([*base, "electra_10"])
    assert json.loads(lost.read_text())["scores"] == adopted["scores"] == curve_unit["scores"]
    assert "learning_rate" not in json.loads(lost.read_text())
    records = sorted(p.name for p in (work / "variants").glob("*.json"))
    assert records == ["electra_10__cola__lr0.0003_decay0.8_epochs1_seeds1.json",
                       "electra_10__cola__lr0.01_decay1_epochs1_seeds1.json",
                       "electra_20__cola__lr0.0003_decay0.8_epochs1_seeds1.json"], records
    before = (work / "variants" / records[2]).stat().st_mtime_ns
    assert finetune_variant.main([*base, "electra_20"]) == same  # recorded: not re-run
    assert (work / "variants" / records[2]).stat().st_mtime_ns == before
    with pytest.raises(cli.UserError, match="'electra_30' is not one of .*electra_20"):
        finetune_variant.main([*base, "electra_30"])
    with pytest.raises(cli.UserError, match="--task 'sst' is not one of"):
        finetune_variant.main([*base[:-4], "sst", "--init", "random"])
    with pytest.raises(cli.UserError, match="another config"):
        finetune_variant.main([*base[1:], "random"])  # not the --quick study of this dir


def test_quick_study_end_to_end_and_resume(tmp_path, capsys):
    require_shared_data()
    work, out = tmp_path / "work", tmp_path / "report"
    study = study_config.make_study_config(True, E2E_HPARAMS)
    _run(capsys, work, out, "--stages", "data,pretrain_electra")
    assert (work / "units" / "pretrain" / "electra.json").exists()
    assert not (work / "units" / "pretrain" / "mlm.json").exists()
    assert (out / "results.md").exists()  # the report follows every stage
    before = _mtimes(work)

    log = _run(capsys, work, out)  # the full command continues the study
    assert "[data] 1 units: 1 done (skipped), 0 to run" in log
    assert "[pretrain_electra] 1 units: 1 done (skipped), 0 to run" in log
    assert all(_mtimes(work)[p] == t for p, t in before.items())
    assert len(list((work / "units" / "pretrain_eval").glob("*.json"))) == 4
    assert len(list((work / "units" / "finetune").glob("*.json"))) == 5 * len(E2E_TASKS)
    assert not list((work / "finetune_runs").rglob("finetuning_models"))
    assert json.loads((work / "study_config.json").read_text())["tasks"] == E2E_TASKS
    _check_report(out, study)

    # A study killed during a unit has no record for it: only that unit runs again.
    lost = work / "units" / "finetune" / "mlm_10__sts.json"
    lost.unlink()
    finished = _mtimes(work)
    log = _run(capsys, work, out)
    assert f"[finetune] {5 * len(E2E_TASKS)} units: {5 * len(E2E_TASKS) - 1} done " \
           "(skipped), 1 to run" in log
    assert "[pretrain_eval] 4 units: 4 done (skipped), 0 to run" in log
    assert lost.exists() and all(_mtimes(work)[p] == t for p, t in finished.items())
    _check_restore(capsys, tmp_path, work, out)
    _check_variant(work)

    with pytest.raises(cli.UserError, match="another config.*electra_steps: 20 there, 40 now"):
        learning_study.main(["--quick", "--work-dir", str(work), "--out-dir", str(out),
                             "--hparams", json.dumps({"tasks": E2E_TASKS, "electra_steps": 40,
                                                      "checkpoint_steps": [20, 40]})])


def test_work_dir_made_before_a_setting_existed_still_resumes(tmp_path):
    from experiments import study_units  # pylint: disable=import-outside-toplevel
    path = tmp_path / "study_config.json"
    current = {"electra_steps": 20, **study_config.ADDED_SETTINGS}
    path.write_text(json.dumps({"electra_steps": 20}))  # written before the two settings
    study_units.check_work_dir_config(current, str(path), study_config.ADDED_SETTINGS)
    changed = {**current, "pretrain_dropout": 0.0}
    with pytest.raises(cli.UserError, match="pretrain_dropout: 0.1 there, 0.0 now"):
        study_units.check_work_dir_config(changed, str(path), study_config.ADDED_SETTINGS)


def test_temperature2_preset_loads_and_sets_the_recipe():
    preset = os.path.join(os.path.dirname(__file__), "..", "experiments", "presets",
                          "temperature2.json")
    study = study_config.make_study_config(False, preset)
    assert (study.temperature, study.corpus_vocab_size, study.vocab_size) == (2.0, 8192, 8192)
    assert study.pretrain_hparams("electra")["model_hparam_overrides"][
        "hidden_dropout_prob"] == 0.0
    assert study.mlm_steps > study.electra_steps  # equal FLOPs: an MLM step is cheaper
