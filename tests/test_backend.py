"""Tests for util/backend.py: automatic backend settings, their overrides, and that
oneDNN-on computes what oneDNN-off does (each in its own process, as TensorFlow reads
the settings when it loads)."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import configure_finetuning
import configure_pretraining
from util import backend, config_utils
from util.config_utils import ConfigError

REPO = Path(__file__).resolve().parents[1]
AVX2 = frozenset({"fma", "avx2"})
BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})


def settings_by_var(settings):
    return {s.var: s for s in settings}


def test_auto_settings_on_an_x86_cpu_without_avx512():
    got = settings_by_var(backend.resolve(backend.Machine("x86_64", AVX2, 6), {}))
    assert got[backend.ONEDNN_VAR].value == "1"
    assert got[backend.INTRA_OP_VAR].value == got[backend.INTER_OP_VAR].value == "6"
    assert got[backend.WEIGHT_GRAD_VAR].value == "eigen"
    assert got[backend.LAYER_NORM_VAR].value == "fused"
    assert got[backend.BATCH_SHARDS_VAR].value == "2"
    assert {s.source for s in got.values()} == {"auto"}


@pytest.mark.parametrize("arch, cores", [("x86_64", 1), ("aarch64", 4)])
def test_batches_stay_whole_on_one_core_or_off_x86(arch, cores):
    got = settings_by_var(backend.resolve(backend.Machine(arch, AVX2, cores), {}))
    assert got[backend.BATCH_SHARDS_VAR].value == "1"
    assert got[backend.BATCH_SHARDS_VAR].source == "auto"


def test_batch_shards_are_read_from_the_environment_and_checked():
    assert backend.batch_shards({}) == 1
    assert backend.batch_shards({backend.BATCH_SHARDS_VAR: "3"}) == 3
    for bad in ("0", "two", "-1", ""):
        with pytest.raises(ValueError, match=f"ELECTRA_BATCH_SHARDS={bad!r}.*whole number"):
            backend.batch_shards({backend.BATCH_SHARDS_VAR: bad})


@pytest.mark.parametrize("arch, flags", [("x86_64", BF16), ("aarch64", frozenset())])
def test_weight_gradients_stay_with_tensorflows_kernel_beyond_avx2(arch, flags):
    got = settings_by_var(backend.resolve(backend.Machine(arch, flags, 2), {}))
    assert got[backend.WEIGHT_GRAD_VAR].value == "onednn"
    assert got[backend.WEIGHT_GRAD_VAR].source == "auto"


def test_weight_grad_kernel_is_read_from_the_environment_and_checked():
    assert backend.weight_grad_matmul({}) == "onednn"
    assert backend.weight_grad_matmul({backend.WEIGHT_GRAD_VAR: "eigen"}) == "eigen"
    with pytest.raises(ValueError, match="ELECTRA_WEIGHT_GRAD_MATMUL='mkl'.*eigen, onednn"):
        backend.weight_grad_matmul({backend.WEIGHT_GRAD_VAR: "mkl"})


def test_layer_norm_kernel_is_read_from_the_environment_and_checked():
    assert backend.layer_norm_kernel({}) == "ops"
    assert backend.layer_norm_kernel({backend.LAYER_NORM_VAR: "fused"}) == "fused"
    with pytest.raises(ValueError, match="ELECTRA_LAYER_NORM='mkl'.*fused, ops"):
        backend.layer_norm_kernel({backend.LAYER_NORM_VAR: "mkl"})


def test_onednn_is_left_to_tensorflow_off_x86():
    got = settings_by_var(backend.resolve(backend.Machine("aarch64", frozenset(), 4), {}))
    assert got[backend.ONEDNN_VAR].value is None
    assert got[backend.LAYER_NORM_VAR].value == "ops"
    assert got[backend.ONEDNN_VAR].source == "TensorFlow default"
    assert got[backend.INTRA_OP_VAR].value == "4"


def test_user_environment_wins_and_is_kept(monkeypatch):
    monkeypatch.setattr(backend, "_APPLIED", None)  # restored after the test
    env = {backend.ONEDNN_VAR: "0", backend.INTRA_OP_VAR: "3", backend.WEIGHT_GRAD_VAR: "eigen",
           backend.LAYER_NORM_VAR: "ops", backend.BATCH_SHARDS_VAR: "1"}
    settings = settings_by_var(backend.apply(env, backend.Machine("x86_64", BF16, 8)))
    assert env == {backend.ONEDNN_VAR: "0", backend.INTRA_OP_VAR: "3",
                   backend.INTER_OP_VAR: "8", backend.WEIGHT_GRAD_VAR: "eigen",
                   backend.LAYER_NORM_VAR: "ops", backend.BATCH_SHARDS_VAR: "1"}
    assert settings[backend.BATCH_SHARDS_VAR].source == "environment"
    assert settings[backend.LAYER_NORM_VAR].source == "environment"
    assert settings[backend.WEIGHT_GRAD_VAR].source == "environment"
    assert settings[backend.ONEDNN_VAR].source == "environment"
    assert settings[backend.INTER_OP_VAR].source == "auto"
    lines = backend.describe()
    assert any(line.startswith(f"backend {backend.ONEDNN_VAR}=0 (environment") for line in lines)
    assert any("native_bf16 True" in line and "-> bfloat16" in line for line in lines)


def test_machine_detection_reads_cpuinfo_topology_and_cgroup_quota(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor : 0\nflags : fpu avx2 amx_bf16 avx512f\n\n"
                                      "processor : 1\nflags : fpu\n")
    assert backend.read_cpu_flags(str(tmp_path / "cpuinfo")) == {"fpu", "avx2", "amx_bf16",
                                                                 "avx512f"}
    assert backend.read_cpu_flags(str(tmp_path / "missing")) == frozenset()
    # cpus 0 and 1 are SMT siblings of one core; cpu 2 is another core.
    for cpu, core in ((0, 0), (1, 0), (2, 1)):
        topology = tmp_path / "sys" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert backend.physical_cores({0, 1, 2}, str(tmp_path / "sys")) == 2
    assert backend.physical_cores({0, 1, 7}, str(tmp_path / "sys")) == 2  # 7: no sysfs entry
    cgroup = tmp_path / "cgroup"
    (cgroup / "cpu").mkdir(parents=True)
    assert backend.cgroup_cpu_limit(str(cgroup)) is None
    (cgroup / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (cgroup / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert backend.cgroup_cpu_limit(str(cgroup)) is None
    (cgroup / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    assert backend.cgroup_cpu_limit(str(cgroup)) == 2.5
    (cgroup / "cpu.max").write_text("max 100000\n")  # cgroup v2 takes precedence
    assert backend.cgroup_cpu_limit(str(cgroup)) is None
    (cgroup / "cpu.max").write_text("50000 100000\n")
    machine = backend.detect_machine(str(tmp_path / "cpuinfo"), str(tmp_path / "sys"),
                                     str(cgroup))
    assert machine.usable_cores == 1 and backend.has_native_bf16(machine.cpu_flags)


@pytest.mark.parametrize("flags, expected", [(BF16, "bfloat16"), (AVX2, "float32"),
                                             (frozenset({"amx_bf16"}), "bfloat16")])
def test_auto_precision_is_bfloat16_only_with_native_support(monkeypatch, flags, expected):
    monkeypatch.setattr(backend, "detect_machine", lambda: backend.Machine("x86_64", flags, 2))
    assert configure_pretraining.make_config("/d", "m", {"mixed_precision": "auto"}
                                             ).mixed_precision == expected
    assert configure_finetuning.make_config("/d", "m", {"mixed_precision": "auto"}
                                            ).mixed_precision == expected
    # Explicit values and the default are never changed.
    assert configure_pretraining.make_config("/d", "m").mixed_precision == "float32"
    assert configure_pretraining.make_config("/d", "m", {"mixed_precision": "bfloat16"}
                                             ).mixed_precision == "bfloat16"


def test_bad_precision_names_the_hparam_and_auto():
    with pytest.raises(ConfigError, match=r"mixed_precision must be 'auto' or one of.*'Auto'"):
        configure_pretraining.make_config("/d", "m", {"mixed_precision": "Auto"})
    config = configure_pretraining.make_config("/d", "m")
    assert "backend " in config_utils.format_config(config)


# Runs in a fresh interpreter: imports util/cpu_setup.py first, as the scripts do, then
# reports what TensorFlow runs with and computes a matmul and a tiny encoder's outputs
# and gradients with fixed weights.
PROBE = r"""
import json, os, sys
import util.cpu_setup
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
from model import modeling

rng = np.random.RandomState(0)
a, b = rng.randn(96, 300).astype(np.float32), rng.randn(300, 80).astype(np.float32)
config = modeling.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=37)
model = modeling.BertModel(config)
variables = sorted(model.trainable_variables, key=lambda v: v.name)
for v in variables:
    v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
ids = tf.constant(rng.randint(0, 99, (3, 11)), tf.int32)
mask = tf.constant(np.array([[1] * 11, [1] * 7 + [0] * 4, [1] * 3 + [0] * 8]), tf.int32)
with tf.GradientTape() as tape:
    out = model(ids, mask, tf.zeros_like(ids)).sequence_output
    loss = tf.reduce_sum(out * tf.cos(tf.range(32, dtype=tf.float32)))
grads = tape.gradient(loss, variables)
np.savez(sys.argv[1], matmul=(tf.constant(a) @ tf.constant(b)).numpy(), a=a, b=b,
         out=out.numpy(), **{f"grad{i}": tf.convert_to_tensor(g).numpy() for i, g in enumerate(grads)})
print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()),
                  "threads": len(os.listdir("/proc/self/task")),
                  "env": {k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS",
                          "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                          "ELECTRA_WEIGHT_GRAD_MATMUL", "ELECTRA_LAYER_NORM",
                          "ELECTRA_BATCH_SHARDS")}}))
"""


def run_probe(tmp_path, name, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in (
        backend.ONEDNN_VAR, backend.INTRA_OP_VAR, backend.INTER_OP_VAR, backend.WEIGHT_GRAD_VAR,
        backend.LAYER_NORM_VAR, backend.BATCH_SHARDS_VAR)}
    env.update(env_vars, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    out = tmp_path / f"{name}.npz"
    result = subprocess.run([sys.executable, "-c", PROBE, str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probes")
    return {"auto": run_probe(tmp, "auto"),
            "onednn_grads": run_probe(tmp, "onednn_grads", ELECTRA_WEIGHT_GRAD_MATMUL="onednn"),
            "off_1": run_probe(tmp, "off_1", TF_ENABLE_ONEDNN_OPTS="0",
                               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1"),
            "off_5": run_probe(tmp, "off_5", TF_ENABLE_ONEDNN_OPTS="0",
                               TF_NUM_INTRAOP_THREADS="5", TF_NUM_INTEROP_THREADS="1")}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_scripts_startup_applies_settings_and_overrides_win(probes):
    machine = backend.detect_machine()
    auto, _ = probes["auto"]
    cores = str(machine.usable_cores)
    assert auto["env"]["TF_NUM_INTRAOP_THREADS"] == auto["env"]["TF_NUM_INTEROP_THREADS"] == cores
    if machine.arch == "x86_64":
        assert auto["env"]["TF_ENABLE_ONEDNN_OPTS"] == "1" and auto["onednn"] is True
    expected = ("eigen" if machine.arch == "x86_64" and "avx512f" not in machine.cpu_flags
                else "onednn")
    assert auto["env"]["ELECTRA_WEIGHT_GRAD_MATMUL"] == expected
    assert auto["env"]["ELECTRA_LAYER_NORM"] == ("fused" if machine.arch == "x86_64" else "ops")
    assert auto["env"]["ELECTRA_BATCH_SHARDS"] == (
        "2" if machine.arch == "x86_64" and machine.usable_cores >= 2 else "1")
    assert probes["onednn_grads"][0]["env"]["ELECTRA_WEIGHT_GRAD_MATMUL"] == "onednn"
    off_1, off_5 = probes["off_1"][0], probes["off_5"][0]
    assert off_1["onednn"] is False and off_1["env"]["TF_NUM_INTRAOP_THREADS"] == "1"
    # TensorFlow honours the thread variables: 4 more intra-op threads in its pool, and
    # in XLA's too once an XLA-compiled function ran (the fused LayerNorm's gradient).
    assert off_5["threads"] - off_1["threads"] in (4, 8)


@pytest.mark.skipif(backend.detect_machine().arch != "x86_64", reason="oneDNN: x86-64 only")
def test_onednn_results_match_eigen_and_numpy(probes):
    assert probes["auto"][0]["onednn"] and not probes["off_1"][0]["onednn"]
    on, off = probes["auto"][1], probes["off_1"][1]
    exact = on["a"].astype(np.float64) @ on["b"].astype(np.float64)
    for result in (on, off):
        np.testing.assert_allclose(result["matmul"], exact, rtol=1e-5, atol=1e-4)
    assert sorted(on.files) == sorted(off.files) and len(on.files) > 20
    for key in on.files:
        np.testing.assert_allclose(on[key], off[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # Both weight-gradient kernels, oneDNN on: the same gradients.
    other = probes["onednn_grads"][1]
    for key in on.files:
        np.testing.assert_allclose(on[key], other[key], rtol=1e-4, atol=1e-5, err_msg=key)


# Entry points that run TensorFlow in their own process: each must apply the backend
# settings before anything can import TensorFlow (TF reads them once, at load).
TF_ENTRY_POINTS = ("run_pretraining.py", "run_finetuning.py", "predict.py", "score_tokens.py",
                   "experiments/learning_study.py", "experiments/diagnose_checkpoint.py")


@pytest.mark.parametrize("script", TF_ENTRY_POINTS)
def test_entry_points_import_cpu_setup_before_anything_from_the_project(script):
    import ast  # pylint: disable=import-outside-toplevel
    tree = ast.parse((REPO / script).read_text())
    imports = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            imports += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append(node.module)
    project = [name for name in imports if name.split(".")[0] not in sys.stdlib_module_names]
    assert project and project[0] == "util.cpu_setup", (script, project[:3])


def test_learning_study_process_runs_with_the_automatic_settings():
    env = {k: v for k, v in os.environ.items() if k != backend.ONEDNN_VAR}
    code = ("import runpy, os, sys; sys.argv = ['x', '--help']\n"
            "try:\n    runpy.run_path('experiments/learning_study.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    expected = "1" if platform.machine().lower() in ("x86_64", "amd64") else "None"
    assert result.stdout.strip().splitlines()[-1] == expected
