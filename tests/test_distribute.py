"""Distribution tests: the shared loop under MirroredStrategy (2 logical CPUs) and
MultiWorkerMirroredStrategy (2 local worker processes) matches one device.

Each distributed run happens in a subprocess (this file run as a script) because the
logical-device split and TF_CONFIG must be set before TensorFlow initialises; the other
tests keep their single device. Run as a script: `python3 tests/test_distribute.py
<strategy> <model> <out.json>` trains a few steps and writes losses and weights.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker_fixtures import free_ports

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GLOBAL_BATCH, STEPS, DIM = 8, 4, 6
LEARNING_RATE = {"toy": 0.05, "electra": 3e-3}
TIMEOUT = 240  # seconds; a hung collective must fail the test, not CI


def _toy_data():
    rng = np.random.RandomState(3)
    x = rng.randn(GLOBAL_BATCH * STEPS, DIM).astype(np.float32)
    y = np.sin(x @ rng.randn(DIM).astype(np.float32)).astype(np.float32)
    return {"x": x, "y": y}


def _toy_model(strategy):
    """Two-layer tanh regression: non-linear, so wrong gradient maths would show."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rng = np.random.RandomState(0)
    with strategy.scope():
        trainable = {"w1": tf.Variable(rng.randn(DIM, 5).astype(np.float32) * 0.5, name="w1"),
                     "w2": tf.Variable(rng.randn(5).astype(np.float32) * 0.5, name="w2")}

    def loss_fn(features, seed, training):
        del seed, training
        hidden = tf.tanh(features["x"] @ trainable["w1"])
        err = tf.linalg.matvec(hidden, trainable["w2"]) - features["y"]
        loss = tf.reduce_mean(err ** 2)  # per-replica mean over its examples
        return loss, {"abs_err": tf.reduce_mean(tf.abs(err))}

    return trainable, loss_fn, ["abs_err"], _toy_data()


def _electra_model(strategy):
    """Tiny ELECTRA with dropout off on full-length sequences (no padding), so every
    replica's loss denominators are equal and the mean of replica losses is the global
    loss. Masks and samples are seeded per example by content, so they are identical
    whichever replica sees an example."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import configure_pretraining  # pylint: disable=import-outside-toplevel
    from pretrain import pretrain_helpers, pretrain_model  # pylint: disable=import-outside-toplevel
    config = configure_pretraining.make_config("/unused", "dist", {
        "vocab_size": 300, "embedding_size": 16, "max_seq_length": 16,
        "generator_hidden_size": 0.5, "model_hparam_overrides": {
            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}})
    special = pretrain_helpers.SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)
    tf.random.set_seed(0)  # same initial weights in every process
    with strategy.scope():
        model = pretrain_model.PretrainingModel(config, special)

    def loss_fn(features, seed, training):
        out = model(features, seed, training)
        return out.loss, {"mlm_loss": out.mlm_loss, "disc_loss": out.disc_loss}

    rng = np.random.RandomState(4)
    ids = rng.randint(104, 300, size=(GLOBAL_BATCH * STEPS, 16)).astype(np.int32)
    ids[:, 0], ids[:, -1] = special.cls, special.sep
    data = {"input_ids": ids, "input_mask": np.ones_like(ids),
            "segment_ids": (np.arange(16) >= 8).astype(np.int32) * np.ones_like(ids)}
    return model.named_variables(), loss_fn, ["mlm_loss", "disc_loss"], data


def run_training(strategy_name, model_kind):
    """Trains STEPS steps of `model_kind` under the named strategy; returns a dict."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from model.optimization import AdamWeightDecay  # pylint: disable=import-outside-toplevel
    from util import distribute, training  # pylint: disable=import-outside-toplevel
    strategy = distribute.get_strategy(strategy_name)
    trainable, loss_fn, loss_names, data = {"toy": _toy_model, "electra": _electra_model}[
        model_kind](strategy)
    with strategy.scope():
        optimizer = AdamWeightDecay(trainable, weight_decay_rate=0.01)
        global_step = training.make_global_step()
    settings = training.LoopSettings(num_train_steps=STEPS, seed=5)
    trainer = training.Trainer(strategy, loss_fn, trainable, optimizer,
                               lambda step: tf.constant(LEARNING_RATE[model_kind]), global_step,
                               settings, loss_names)

    def dataset_fn(ctx, batch_size):
        # Per-replica batches in global-batch order; pipeline p keeps every p-th one, so
        # replica r of step t sees examples [t*G + r*B, t*G + (r+1)*B) like one device.
        d = tf.data.Dataset.from_tensor_slices(data).batch(batch_size, drop_remainder=True)
        return d.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)

    iterator = iter(distribute.distribute_dataset(strategy, dataset_fn, GLOBAL_BATCH))
    losses = []
    for _ in range(STEPS):
        _, last, _ = trainer.train_steps(iterator, tf.constant(1))
        losses.append({k: float(v) for k, v in last.items()})
    return {"replicas": strategy.num_replicas_in_sync, "losses": losses,
            "weights": {k: v.numpy().tolist() for k, v in trainable.items()},
            "chief": distribute.is_chief(strategy)}


def _script_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_script(args, env):
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs):
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]


def _compare(result, reference, tol):
    for step, (got, want) in enumerate(zip(result["losses"], reference["losses"])):
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=tol, abs=tol), (step, name)
    for name, want in reference["weights"].items():
        np.testing.assert_allclose(result["weights"][name], want, rtol=tol, atol=tol,
                                   err_msg=name)


# Float tolerance: the all-reduce sums the two half-batch gradients in another order.
TOLERANCE = {"toy": 1e-5, "electra": 1e-4}


@pytest.fixture(name="one_device_reference", scope="module")
def fixture_one_device_reference(tmp_path_factory):
    refs = {}
    for kind in ("toy", "electra"):
        out = tmp_path_factory.mktemp("ref") / f"one_device_{kind}.json"
        _wait([_run_script(["one_device", kind, str(out)], _script_env())])
        refs[kind] = json.loads(out.read_text())
    return refs


@pytest.mark.parametrize("kind", ["toy", "electra"])
def test_mirrored_two_logical_cpus_matches_one_device(tmp_path, one_device_reference, kind):
    out = tmp_path / "mirrored.json"
    _wait([_run_script(["mirrored", kind, str(out)], _script_env(SPLIT_CPU="2"))])
    result = json.loads(out.read_text())
    reference = one_device_reference[kind]
    assert result["replicas"] == 2 and reference["replicas"] == 1
    _compare(result, reference, TOLERANCE[kind])
    # The run really trained: loss after 3 updates is below the first.
    assert result["losses"][-1]["loss"] < result["losses"][0]["loss"]


def test_multi_worker_two_processes_match_one_device(tmp_path, one_device_reference):
    ports = free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        out = tmp_path / f"worker{index}.json"
        procs.append(_run_script(["multi_worker", "electra", str(out)],
                                 _script_env(TF_CONFIG=tf_config)))
    _wait(procs)
    results = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["chief"] for r in results] == [True, False]
    for result in results:
        _compare(result, one_device_reference["electra"], TOLERANCE["electra"])


def test_bad_strategy_inputs_give_clear_errors(monkeypatch):
    from util import distribute  # pylint: disable=import-outside-toplevel
    from util.cli import UserError  # pylint: disable=import-outside-toplevel
    with pytest.raises(UserError, match="unknown distribution_strategy 'gpu'"):
        distribute.get_strategy("gpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs the TF_CONFIG environment variable"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"index": 3}}')
    with pytest.raises(UserError, match="task.index 3 is outside the 1 workers"):
        distribute.get_strategy("multi_worker")


def test_per_replica_batch_must_divide():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from util import distribute  # pylint: disable=import-outside-toplevel
    from util.cli import UserError  # pylint: disable=import-outside-toplevel

    class TwoReplicas:
        num_replicas_in_sync = 2

    assert distribute.per_replica_batch_size(TwoReplicas(), 8) == 4
    with pytest.raises(UserError, match="train_batch_size=7 is not divisible by the 2"):
        distribute.per_replica_batch_size(TwoReplicas(), 7)
    assert distribute.is_chief(tf.distribute.get_strategy())


def _main(argv):
    strategy_name, model_kind, out = argv
    if os.environ.get("SPLIT_CPU"):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(os.environ["SPLIT_CPU"]))
    result = run_training(strategy_name, model_kind)
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
