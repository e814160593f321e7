"""TFRecord cache: roundtrip, padding, steps, stale-cache rebuild, multi-task nesting."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from finetune import feature_spec
from finetune import preprocessing
from finetune import task_builder
from model import modeling
import finetune_fixtures as fx
from util import io_utils


def build(data_dir, task_names, **hparams):
    config = fx.make_config(data_dir, task_names, **hparams)
    tasks = task_builder.get_tasks(config, fx.tokenizer())
    return config, tasks, preprocessing.Preprocessor(config, tasks)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def batches(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


def test_predict_roundtrip_padding_and_steps(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=["wnli"])
    config, (wnli,), prep = build(data, ["wnli"], max_seq_length=24, eval_batch_size=16)
    dataset, steps = prep.prepare_predict([wnli], "dev")
    assert steps == 80 // 16  # 71 dev examples padded to 80
    got = batches(dataset, 100)
    assert len(got) == steps
    flat = {k: np.concatenate([b[k] for b in got]) for k in ("input_ids", "task_id")}
    own = {k: np.concatenate([b["wnli"][k] for b in got]) for k in ("eid", "label_ids")}
    expected = [wnli.featurize(e, False)[0] for e in wnli.get_examples("dev")]
    np.testing.assert_array_equal(flat["input_ids"][:71], [f["input_ids"] for f in expected])
    np.testing.assert_array_equal(own["label_ids"][:71], [f["label_ids"] for f in expected])
    np.testing.assert_array_equal(own["eid"][:71], np.arange(71))
    # Padding rows: task_id = number of tasks, everything else zero.
    np.testing.assert_array_equal(flat["task_id"], [0] * 71 + [1] * 9)
    assert not flat["input_ids"][71:].any() and not own["label_ids"][71:].any()
    first = got[0]
    assert first["input_ids"].dtype == np.int32 and first["input_ids"].shape == (16, 24)
    spec = dataset.element_spec
    assert spec["input_mask"].shape == [16, 24] and spec["wnli"]["eid"].shape == [16]


def test_train_is_shuffled_once_and_steps_follow_epochs(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=["wnli"])
    _, _, prep = build(data, ["wnli"], max_seq_length=16, train_batch_size=32,
                       num_train_epochs=2.5)
    dataset, steps = prep.prepare_train()
    assert steps == int(640 // 32 * 2.5)  # 635 examples padded to 640
    tfrecord, metadata = prep.paths(prep._tasks, "train")
    records = [tf.train.Example.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(tfrecord)]
    eids = [r.features.feature["wnli_eid"].int64_list.value[0] for r in records]
    assert len(records) == 640
    assert sorted(eids[:635]) == list(range(635)) and eids[:635] != list(range(635))
    # Seeded: a rebuild writes the same order.
    os.remove(metadata)
    prep.prepare_train()
    again = [tf.train.Example.FromString(r.numpy()).features.feature["wnli_eid"]
             .int64_list.value[0] for r in tf.data.TFRecordDataset(tfrecord)]
    assert again == eids
    assert len(batches(dataset, 25)) == 25  # repeats past one epoch


def test_cache_reused_only_when_settings_match(tmp_path, capsys):
    data = fx.make_data_dir(tmp_path, tasks=["rte"])
    _, (rte,), prep = build(data, ["rte"], max_seq_length=32, eval_batch_size=8)
    prep.prepare_predict([rte], "dev")
    tfrecord, metadata = prep.paths([rte], "dev")
    meta = load_json(metadata)
    assert meta["n_examples"] == 280 and meta["n_real_examples"] == 277
    assert meta["settings"]["vocab_sha256"] == io_utils.file_sha256(
        fx.SHARED_DATA / "vocab" / "vocab.txt")
    assert meta["settings"]["tasks"][0]["labels"] == ["entailment", "not_entailment"]
    stamp = os.stat(tfrecord).st_mtime_ns
    capsys.readouterr()
    # Same settings: reused, nothing re-read.
    _, (rte,), prep = build(data, ["rte"], max_seq_length=32, eval_batch_size=8)
    prep.prepare_predict([rte], "dev")
    assert os.stat(tfrecord).st_mtime_ns == stamp
    assert "rte dev: 277 examples" not in capsys.readouterr().out
    # max_seq_length changed: the stale cache is rebuilt and parses at the new length.
    _, (rte,), prep = build(data, ["rte"], max_seq_length=48, eval_batch_size=8)
    dataset, _ = prep.prepare_predict([rte], "dev")
    out = capsys.readouterr().out
    assert "made with other settings (feature_specs, max_seq_length); rebuilding" in out
    assert next(iter(dataset))["input_ids"].shape == [8, 48]
    assert load_json(metadata)["settings"]["max_seq_length"] == 48
    # The task file replaced by a shorter one: rebuilt, not served from the old cache.
    dev = data / "finetuning_data" / "rte" / "dev.tsv"
    head = dev.read_text(encoding="utf-8").splitlines(keepends=True)[:51]
    dev.unlink()
    dev.write_text("".join(head), encoding="utf-8")
    _, (rte,), prep = build(data, ["rte"], max_seq_length=48, eval_batch_size=8)
    prep.prepare_predict([rte], "dev")
    assert "made with other settings (raw_data); rebuilding" in capsys.readouterr().out
    assert load_json(metadata)["n_real_examples"] == 50


def test_truncated_cache_is_rebuilt_and_reuse_can_be_disabled(tmp_path, capsys):
    data = fx.make_data_dir(tmp_path, tasks=["rte"])
    _, (rte,), prep = build(data, ["rte"], max_seq_length=32, eval_batch_size=8)
    prep.prepare_predict([rte], "dev")
    tfrecord, _ = prep.paths([rte], "dev")
    size = os.path.getsize(tfrecord)
    with open(tfrecord, "r+b") as f:
        f.truncate(size // 2)
    capsys.readouterr()
    prep.prepare_predict([rte], "dev")
    assert "unexpected size" in capsys.readouterr().out
    assert os.path.getsize(tfrecord) == size
    _, (rte,), prep = build(data, ["rte"], max_seq_length=32, eval_batch_size=8,
                            use_tfrecords_if_existing=False)
    prep.prepare_predict([rte], "dev")
    assert "rte dev: 277 examples" in capsys.readouterr().out
    leftovers = [n for n in os.listdir(os.path.dirname(tfrecord)) if ".tmp-" in n]
    assert leftovers == []  # atomic writes leave no temp files


def test_multitask_features_nested_by_task(tmp_path):
    data = fx.make_data_dir(tmp_path, tasks=["sts", "wnli"])
    config, tasks, prep = build(data, ["wnli", "sts"], max_seq_length=16,
                                train_batch_size=64, num_train_epochs=1.0)
    assert [s.key for s in prep.feature_specs] == [
        "input_ids", "input_mask", "segment_ids", "task_id", "wnli_eid",
        "wnli_label_ids", "sts_eid", "sts_targets"]
    dataset, steps = prep.prepare_train()
    assert steps == 12160 // 64  # 635 + 2 * 5749 = 12133 examples padded to 12160
    batch = next(iter(dataset))
    assert set(batch) == {"input_ids", "input_mask", "segment_ids", "task_id", "wnli", "sts"}
    assert batch["sts"]["targets"].dtype == tf.float32
    task_id = batch["task_id"].numpy()
    targets = batch["sts"]["targets"].numpy()
    assert set(task_id) <= {0, 1, 2} and (targets[task_id != 1] == 0).all()
    assert feature_spec.features_for_task(batch, "sts")["targets"] is batch["sts"]["targets"]


def test_spec_errors_are_clear():
    with pytest.raises(ValueError, match="reserved for the shared features"):
        feature_spec.FeatureSpec("input_ids", (4,), task_name="cola")
    specs = feature_spec.get_shared_feature_specs(4)
    with pytest.raises(ValueError, match="that none of its feature specs declare"):
        feature_spec.to_tf_example(specs, "cola", {"label_ids": 1})
    with pytest.raises(ValueError, match="has shape \\(3,\\), but its spec says \\(4,\\)"):
        feature_spec.to_tf_example(specs, None, {"input_ids": [1, 2, 3]})


@pytest.mark.parametrize("task_name,metric", [("wnli", "accuracy"), ("chunk", "f1")])
def test_dataset_encoder_head_scorer_fit_together(tmp_path, task_name, metric):
    data = fx.make_data_dir(tmp_path, tasks=[task_name])
    config, (task,), prep = build(data, [task_name], debug=True, max_seq_length=32,
                                  eval_batch_size=16)
    dataset, steps = prep.prepare_predict([task], "dev")
    encoder = modeling.BertModel(modeling.BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32))
    head = task.get_prediction_module(16)
    scorer = task.get_scorer("dev")
    n_real = 0
    for batch in dataset:
        features = feature_spec.features_for_task(batch, task.name)
        enc = encoder(batch["input_ids"], batch["input_mask"], batch["segment_ids"])
        losses, outputs = head(enc, features, is_training=False)
        assert losses.shape == [16]
        n_real += scorer.update_batch(tf.nest.map_structure(np.asarray, outputs),
                                      batch["task_id"].numpy(), task.task_id)
    expected = len(task.get_examples("dev"))  # debug: first 100 lines / ~100 sentences
    assert n_real == expected and steps == -(-expected // 16)
    results = dict(scorer.get_results())
    assert 0.0 <= results[metric] <= 100.0 and results["loss"] > 0.0
    path = scorer.write_predictions(str(tmp_path / "preds.txt"))
    assert os.path.getsize(path) > 0
