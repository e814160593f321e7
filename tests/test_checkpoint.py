"""Tests for util/checkpoint.py: name-based save/restore, errors, retention, crash safety."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from util import checkpoint

REPO = Path(__file__).resolve().parents[1]


def make_vars(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {
        "electra/embeddings/word_embeddings": tf.Variable(
            rng.normal(size=(11, 4)).astype(np.float32) * scale),
        "electra/encoder/layer_0/output/LayerNorm/gamma": tf.Variable(
            rng.normal(size=(4,)).astype(np.float32) * scale),
        "discriminator_predictions/dense_1/bias": tf.Variable(
            rng.normal(size=(1,)).astype(np.float32) * scale),
        "global_step": tf.Variable(np.int64(1234 * scale)),
    }


def values(named):
    return {n: v.numpy() for n, v in named.items()}


def test_round_trip_and_tf_readers(tmp_path):
    src = make_vars(0)
    prefix = checkpoint.save_checkpoint(src, str(tmp_path / "model.ckpt-7"))
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt-7.data-00000-of-00001",
                                            "model.ckpt-7.index"]
    listed = dict(tf.train.list_variables(prefix))
    assert listed == {n: v.shape.as_list() for n, v in src.items()}
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_tensor("global_step") == 1234
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
    dst = make_vars(1, scale=0.0)
    report = checkpoint.restore_checkpoint(dst, prefix)
    for name, value in values(src).items():
        np.testing.assert_array_equal(dst[name].numpy(), value)
    assert report.restored == sorted(src) and report.missing == [] and report.unused == []


def test_tf1_saver_format_is_readable(tmp_path):
    """A checkpoint written by TF1's name-based Saver (as the released models) restores."""
    src = values(make_vars(2))
    prefix = str(tmp_path / "electra_small")
    with tf.Graph().as_default():
        graph_vars = {n: tf.compat.v1.Variable(v, name=n) for n, v in src.items()}
        saver = tf.compat.v1.train.Saver(var_list=graph_vars)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False)
    dst = make_vars(3)
    checkpoint.restore_checkpoint(dst, prefix)
    for name, value in src.items():
        np.testing.assert_array_equal(dst[name].numpy(), value)


def test_shape_mismatch_names_variable_and_both_shapes(tmp_path):
    src = make_vars(0)
    prefix = checkpoint.save_checkpoint(src, str(tmp_path / "ckpt"))
    dst = make_vars(1)
    dst["electra/embeddings/word_embeddings"] = tf.Variable(tf.zeros([12, 4]))
    before = values(dst)
    with pytest.raises(ValueError, match=r"electra/embeddings/word_embeddings: shape \[11, 4\] "
                                         r"in the checkpoint but \[12, 4\] in the model"):
        checkpoint.restore_checkpoint(dst, prefix)
    for name, value in before.items():  # nothing was assigned
        np.testing.assert_array_equal(dst[name].numpy(), value)


def test_missing_required_and_dtype_errors(tmp_path):
    prefix = checkpoint.save_checkpoint(make_vars(0), str(tmp_path / "ckpt"))
    dst = make_vars(1)
    dst["generator/encoder/layer_0/x"] = tf.Variable([1.0])
    dst["global_step"] = tf.Variable(np.int32(0))
    with pytest.raises(ValueError) as info:
        checkpoint.restore_checkpoint(dst, prefix)
    assert "generator/encoder/layer_0/x: missing from the checkpoint" in str(info.value)
    assert "global_step: dtype int64 in the checkpoint but int32" in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope.index"):
        checkpoint.restore_checkpoint(dst, str(tmp_path / "nope"))


def test_missing_adam_slots_allowed_and_unused_reported(tmp_path, capsys):
    src = make_vars(0)
    src["generator_predictions/output_bias"] = tf.Variable(tf.ones([11]))  # not in model
    prefix = checkpoint.save_checkpoint(src, str(tmp_path / "released"))
    dst = make_vars(1)
    slot = tf.Variable(tf.zeros([11, 4]))
    dst["electra/embeddings/word_embeddings/adam_m"] = slot
    report = checkpoint.restore_checkpoint(
        dst, prefix, allow_missing=lambda name: name.endswith(("/adam_m", "/adam_v")))
    assert report.missing == ["electra/embeddings/word_embeddings/adam_m"]
    assert report.unused == ["generator_predictions/output_bias"]
    assert len(report.restored) == 4
    assert np.all(slot.numpy() == 0)
    np.testing.assert_array_equal(dst["electra/embeddings/word_embeddings"].numpy(),
                                  src["electra/embeddings/word_embeddings"].numpy())
    assert "1 not in the checkpoint" in capsys.readouterr().out


def test_manager_retention_and_state_file(tmp_path):
    named = make_vars(0)
    manager = checkpoint.CheckpointManager(str(tmp_path), max_to_keep=2)
    assert manager.latest_checkpoint is None
    assert manager.restore_or_initialize(named) is None
    for step in (100, 200, 300):
        named["global_step"].assign(step)
        manager.save(named, step)
    files = sorted(os.listdir(tmp_path))
    assert files == ["checkpoint", "model.ckpt-200.data-00000-of-00001", "model.ckpt-200.index",
                     "model.ckpt-300.data-00000-of-00001", "model.ckpt-300.index"]
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert state.model_checkpoint_path == str(tmp_path / "model.ckpt-300")
    assert list(state.all_model_checkpoint_paths) == [str(tmp_path / "model.ckpt-200"),
                                                      str(tmp_path / "model.ckpt-300")]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-300")
    # A resumed run recovers the kept list and keeps pruning.
    resumed = checkpoint.CheckpointManager(str(tmp_path), max_to_keep=2)
    assert resumed.checkpoints == [str(tmp_path / "model.ckpt-200"),
                                   str(tmp_path / "model.ckpt-300")]
    named["global_step"].assign(0)
    report = resumed.restore_or_initialize(named)
    assert report.path == str(tmp_path / "model.ckpt-300") and named["global_step"].numpy() == 300
    resumed.save(named, 400)
    assert not os.path.exists(tmp_path / "model.ckpt-200.index")
    # A directory restores its latest checkpoint.
    assert checkpoint.restore_checkpoint(named, str(tmp_path)).path.endswith("model.ckpt-400")


def test_manager_keep_all(tmp_path):
    named = make_vars(0)
    for keep in (0, None):
        directory = tmp_path / str(keep)
        manager = checkpoint.CheckpointManager(str(directory), max_to_keep=keep, prefix_name="m")
        for step in range(1, 5):
            manager.save(named, step)
        assert len(tf.train.get_checkpoint_state(str(directory)).all_model_checkpoint_paths) == 4
        assert len(list(directory.glob("m-*.index"))) == 4


def test_crash_mid_save_keeps_previous_latest(tmp_path, monkeypatch):
    named = make_vars(0)
    manager = checkpoint.CheckpointManager(str(tmp_path), max_to_keep=3)
    manager.save(named, 100)
    real_replace = os.replace

    def crash_on_index(src, dst):
        if dst.endswith(".index"):
            raise KeyboardInterrupt("killed")  # dies after the data files were renamed
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_index)
    named["global_step"].assign(200)
    with pytest.raises(KeyboardInterrupt):
        manager.save(named, 200)
    monkeypatch.undo()
    assert not os.path.exists(tmp_path / "model.ckpt-200.index")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # temp files removed
    fresh = checkpoint.CheckpointManager(str(tmp_path), max_to_keep=3)
    assert fresh.latest_checkpoint == str(tmp_path / "model.ckpt-100")
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-100")
    report = fresh.restore_or_initialize(named)
    assert named["global_step"].numpy() == 1234 and report.path.endswith("model.ckpt-100")
    # Re-saving the same step afterwards produces a complete, readable checkpoint.
    fresh.save(named, 200)
    assert tf.train.load_checkpoint(str(tmp_path / "model.ckpt-200")).get_tensor(
        "global_step") == 1234


def test_killed_process_never_leaves_a_complete_looking_checkpoint(tmp_path):
    """SIGKILL a writer at random moments: any .index present must restore fully."""
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        from util import checkpoint
        named = {{"w": tf.Variable(np.ones((512, 512), np.float32)),
                  "global_step": tf.Variable(np.int64(0))}}
        manager = checkpoint.CheckpointManager({str(tmp_path)!r}, max_to_keep=2)
        print("READY", flush=True)
        for step in range(1, 100000):
            named["w"].assign(tf.fill([512, 512], float(step)))
            named["global_step"].assign(step)
            manager.save(named, step)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(1.5)
    proc.kill()
    proc.wait()
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) >= 2
    for index in tmp_path.glob("model.ckpt-*.index"):
        prefix = str(index)[: -len(".index")]
        step = int(prefix.rsplit("-", 1)[1])
        named = {"w": tf.Variable(tf.zeros([512, 512])), "global_step": tf.Variable(np.int64(0))}
        checkpoint.restore_checkpoint(named, prefix)
        assert named["global_step"].numpy() == step
        assert np.all(named["w"].numpy() == step)


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from util import checkpoint
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        src = {"a/kernel": tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3)),
               "global_step": tf.Variable(np.int64(5))}
        dst = {"a/kernel": tf.Variable(tf.zeros([2, 3])),
               "a/kernel/adam_m": tf.Variable(tf.zeros([2, 3])),
               "global_step": tf.Variable(np.int64(0))}
    manager = checkpoint.CheckpointManager(sys.argv[1], max_to_keep=1)
    manager.save(src, 5)
    report = manager.restore_or_initialize(dst, allow_missing=lambda n: "adam" in n)
    assert report.missing == ["a/kernel/adam_m"], report
    for name in ("a/kernel", "global_step"):
        copies = strategy.experimental_local_results(dst[name])
        assert len(copies) == 2
        for copy in copies:
            np.testing.assert_array_equal(copy.numpy(), src[name].numpy())
    print("MIRRORED_OK")
""")


def test_save_and_restore_mirrored_variables(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]
    assert tf.train.list_variables(str(tmp_path / "model.ckpt-5")) == [("a/kernel", [2, 3]),
                                                                       ("global_step", [])]
