"""bench/profile_ops.py: self time from nested profiler events (hand-computed cases), the
op-event filter, the kinds of both libraries' op names, and one real profile of a tiny
fine-tuning step."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import profile_ops  # noqa: E402  pylint: disable=wrong-import-position


def test_self_time_subtracts_directly_enclosed_events_only():
    # A [0, 100) encloses B [10, 40), which encloses C [15, 25); D [50, 60) is in A;
    # E [200, 230) stands alone and F [230, 235) starts as E ends (not enclosed).
    # Self: A 100 - 30 - 10 = 60, B 30 - 10 = 20, C 10, D 10, E 30, F 5. The events
    # arrive unordered.
    events = [("E", 200, 30), ("C", 15, 10), ("A", 0, 100), ("D", 50, 10), ("B", 10, 30),
              ("F", 230, 5)]
    got = profile_ops.self_times(events)
    assert got == {"A": [60, 1], "B": [20, 1], "C": [10, 1], "D": [10, 1], "E": [30, 1],
                   "F": [5, 1]}


def test_self_time_sums_calls_of_one_type():
    got = profile_ops.self_times([("MatMul", 0, 7), ("MatMul", 10, 5), ("Add", 20, 1)])
    assert got == {"MatMul": [12, 2], "Add": [1, 1]}


@pytest.mark.parametrize("name, expected", [
    ("encoder/layer_0/attention/MatMul:_MklBatchMatMulV2", "_MklBatchMatMulV2"),
    ("Adam/update:ResourceApplyAdam", "ResourceApplyAdam"),
    ("ExecutorState::Process", None),
    ("EagerLocalExecute: __inference_train_step_2318", None),
    ("TFE_Py_ExecuteCancelable", None),
])
def test_op_type_of_keeps_op_events_only(name, expected):
    assert profile_ops.op_type_of(name) == expected


@pytest.mark.parametrize("op, kind", [
    ("_MklBatchMatMulV2", "matmul"), ("_MklNativeFusedMatMul", "matmul"),
    ("aten::addmm", "matmul"), ("aten::bmm", "matmul"),
    ("_MklSoftmax", "softmax"), ("aten::_softmax_backward_data", "softmax"),
    ("aten::native_layer_norm_backward", "normalisation"), ("Rsqrt", "normalisation"),
    ("SquaredDifference", "normalisation"),
    ("StatelessRandomUniformV2", "random"), ("aten::bernoulli_", "random"),
    ("ResourceApplyAdam", "optimizer"), ("aten::_fused_adamw_", "optimizer"),
    ("_XlaRun", "xla"), ("_MklTranspose", "data movement"), ("aten::copy_", "data movement"),
    ("AddV2", "element-wise"), ("aten::gelu_backward", "element-wise"),
    ("NoOp", "other"),
])
def test_kind_of_maps_both_libraries(op, kind):
    assert profile_ops.kind_of(op) == kind


def test_xspace_op_times_reads_every_line_of_a_plane():
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = {1: "call:PartitionedCall", 2: "m:_MklMatMul", 3: "ExecutorState::Process"}
    for metadata_id, name in names.items():
        plane.event_metadata[metadata_id].name = name
    first = plane.lines.add(name="tf_Compute/1")
    for metadata_id, offset, duration in [(3, 0, 1000), (1, 0, 500), (2, 100, 300)]:
        first.events.add(metadata_id=metadata_id, offset_ps=offset, duration_ps=duration)
    second = plane.lines.add(name="tf_Compute/2")
    second.events.add(metadata_id=2, offset_ps=0, duration_ps=40)
    got = profile_ops.xspace_op_times(space)
    assert got == {"PartitionedCall": [200, 1], "_MklMatMul": [340, 2]}


def test_profile_of_a_tiny_finetuning_step(tmp_path):
    out = tmp_path / "profile.json"
    hparams = json.dumps({"model_hparam_overrides": {"num_hidden_layers": 1,
                                                     "hidden_size": 64}})
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "profile_ops.py"), "--batch", "4",
         "--seq", "32", "--steps", "2", "--warmup", "1", "--threads", "1", "--top", "5",
         "--hparams", hparams, "--json", str(out)],
        capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kind" in done.stdout and "ours:" in done.stdout
    ours = json.loads(out.read_text())["ours"]
    assert ours["seconds_per_step"] > 0
    kinds = profile_ops.kinds(ours["ops"])
    assert kinds["matmul"] > 0 and kinds["optimizer"] > 0
    # One layer: Q, K, V, attention output, two FFN products and the attention's two
    # batched products happen forward; backward adds more. Each step calls them alike.
    calls = {op: c for op, (_, c) in ours["ops"].items() if profile_ops.kind_of(op) == "matmul"}
    assert sum(calls.values()) >= 8, calls
    assert all(float(c).is_integer() for c in calls.values()), calls
