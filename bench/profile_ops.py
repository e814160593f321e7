"""Where a step's time goes, op by op: ours under TensorFlow's profiler beside
HuggingFace PyTorch under torch.profiler, on the same workload.

bench/bench_speed.py says how fast a step is; this says why. It builds the same
workloads (bench/speed_tf.py, bench/speed_hf.py), warms them up, profiles --steps
steps of each side in its own process (ours with util/cpu_setup.py's settings, as
the scripts run) and prints, per side, the ops with the most self time per step and
the same time summed into coarse kinds (matrix products, softmax, normalisation,
element-wise, random numbers, optimizer, data movement, XLA clusters, other) so the two
libraries' breakdowns can be read side by side. Self time excludes the ops an op
encloses on its thread (a function-call op does not count its body twice). With
intra-op threads an op's time is its wall time on the thread that ran it; ops on
different inter-op threads may overlap, so the sums can exceed the step. Profiling
slows a step: compare shares, and take speeds from bench_speed.py. Asserts nothing.

  python3 bench/profile_ops.py [--workload finetune] [--precision float32] [--steps 5]
      [--warmup 2] [--batch 32] [--seq 128] [--top 20] [--compare-hf] [--json out.json]
      [--hparams '{"model_hparam_overrides": {"num_hidden_layers": 2}}']
"""

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "bench")]

import speed_worker  # pylint: disable=wrong-import-position  (imports no framework)
from util import backend  # pylint: disable=wrong-import-position  (no TensorFlow import)

# First match wins; TensorFlow op types and PyTorch aten names side by side.
KINDS = (
    ("matmul", r"MatMul|Einsum|Conv|aten::(addmm|mm|bmm|baddbmm|matmul|linear)$"),
    ("softmax", r"Softmax|softmax"),
    ("normalisation", r"layer_norm|LayerNorm|BatchNorm|Mean$|SquaredDifference|Rsqrt|Moments"),
    ("random", r"Random|bernoulli|dropout|rand|multinomial"),
    ("optimizer", r"ResourceApply|Adam|adam|AssignVariable|AssignAdd|AssignSub|"
                  r"ReadVariableOp|clip|norm|foreach|_fused"),
    ("xla", r"_XlaRun|_XlaCompile|XlaLaunch|cluster"),
    ("data movement", r"Transpose|Reshape|Concat|Gather|Scatter|Slice|Pad|Tile|Pack|Cast|"
                      r"Identity|Copy|copy|permute|contiguous|clone|view|cat$|expand|"
                      r"index|gather|scatter|transpose|to$|_to_copy|slice|select"),
    ("element-wise", r"Add|Mul|Sub|Div|Neg|Exp|Log|Tanh|Erf|Gelu|Relu|Maximum|Minimum|"
                     r"Square|Sqrt|Select|Where|Sum|BiasAdd|aten::"),
)


def kind_of(op_type):
    """The coarse kind of an op type or aten name (see KINDS)."""
    for kind, pattern in KINDS:
        if re.search(pattern, op_type):
            return kind
    return "other"


def op_type_of(event_name):
    """"name:Type" of a TensorFlow op event -> Type; None for the profiler's own
    events ("ExecutorState::Process", "EagerLocalExecute: __inference_f_25", python
    frames): op names hold neither "::" nor spaces."""
    if "::" in event_name or ":" not in event_name or re.search(r"\s", event_name):
        return None
    return event_name.rsplit(":", 1)[1] or None


def self_times(events):
    """Self time per op type on one thread.

    Args:
      events: (op_type, start, duration) of one thread's op events, in any order.
    Returns:
      {op_type: [self time, calls]}: each event's duration minus that of the events it
      directly encloses (the enclosing one is the latest-starting open event).
    """
    totals = collections.defaultdict(lambda: [0, 0])
    stack = []  # open events: [op_type, end, self time so far]
    for op_type, start, duration in sorted(events, key=lambda e: (e[1], -e[2])):
        while stack and stack[-1][1] <= start:
            done = stack.pop()
            totals[done[0]][0] += done[2]
        if stack:
            stack[-1][2] -= duration
        stack.append([op_type, start + duration, duration])
        totals[op_type][1] += 1
    for done in stack:
        totals[done[0]][0] += done[2]
    return dict(totals)


def xspace_op_times(space):
    """{op_type: [self picoseconds, calls]} over the host planes of an XSpace proto."""
    totals = collections.defaultdict(lambda: [0, 0])
    for plane in space.planes:
        metadata = plane.event_metadata
        for line in plane.lines:
            events = []
            for event in line.events:
                op_type = op_type_of(metadata[event.metadata_id].name)
                if op_type is not None:
                    events.append((op_type, event.offset_ps, event.duration_ps))
            for op_type, (time_ps, calls) in self_times(events).items():
                totals[op_type][0] += time_ps
                totals[op_type][1] += calls
    return dict(totals)


def _profile_tf(step, steps):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as log_dir:
        tf.profiler.experimental.start(log_dir)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = time.perf_counter() - start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for path in glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True):
            with open(path, "rb") as f:
                space.MergeFromString(f.read())
    ops = {name: [ps / 1e9, calls] for name, (ps, calls) in xspace_op_times(space).items()}
    return ops, seconds


def _profile_hf(step, steps):
    import torch  # pylint: disable=import-outside-toplevel
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = time.perf_counter() - start
    ops = {e.key: [e.self_cpu_time_total / 1e3, e.count] for e in prof.key_averages()}
    return ops, seconds


def profile_side(args):
    """Profiles one side in this process: {"ops": {op: [ms/step, calls/step]}, ...}."""
    side = speed_worker.load_side(args)
    info = json.loads(args.info)
    if args.impl == "tf":
        step = side.build(args.workload, args.precision, args)[0]
        info = side.describe(args)
    else:
        step = side.build(args.workload, args.precision, args, info)
    for _ in range(args.warmup):
        step()
    ops, seconds = (_profile_tf if args.impl == "tf" else _profile_hf)(step, args.steps)
    per_step = {op: [ms / args.steps, calls / args.steps] for op, (ms, calls) in ops.items()}
    return {"info": info, "seconds_per_step": seconds / args.steps, "ops": per_step}


def kinds(ops):
    """{kind: ms/step} of a side's ops."""
    totals = collections.defaultdict(float)
    for op, (ms, _) in ops.items():
        totals[kind_of(op)] += ms
    return dict(totals)


def run_side(impl, args, info=None):
    """profile_side in a fresh process (each side its own backend settings and threads)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if args.threads_given:
        env[backend.INTRA_OP_VAR] = env[backend.INTER_OP_VAR] = str(args.threads)
    command = [sys.executable, os.path.abspath(__file__), "--side", impl,
               "--workload", args.workload, "--precision", args.precision,
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--seq", str(args.seq),
               "--threads", str(args.threads), "--hparams", args.hparams,
               "--info", json.dumps(info or {})]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the {impl} side failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_side(label, result, top):
    ops = result["ops"]
    total = sum(ms for ms, _ in ops.values()) or 1.0
    print(f"\n{label}: {result['seconds_per_step']:.3f} s/step under the profiler, "
          f"{total:.1f} ms/step of op self time")
    print(f"{'op':44s} {'kind':14s} {'ms/step':>9s} {'share':>6s} {'calls/step':>10s}")
    for op, (ms, calls) in sorted(ops.items(), key=lambda item: -item[1][0])[:top]:
        print(f"{op[:44]:44s} {kind_of(op):14s} {ms:9.2f} {100 * ms / total:5.1f}% "
              f"{calls:10.1f}")


def print_kinds(results):
    names = list(results)
    per_side = {name: kinds(results[name]["ops"]) for name in names}
    print(f"\n{'kind':14s}" + "".join(f" {name + ' ms/step':>16s} {'share':>6s}"
                                      for name in names))
    for kind in [k for k, _ in KINDS] + ["other"]:
        cells = ""
        for name in names:
            total = sum(per_side[name].values()) or 1.0
            ms = per_side[name].get(kind, 0.0)
            cells += f" {ms:16.2f} {100 * ms / total:5.1f}%"
        print(f"{kind:14s}{cells}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("pretrain", "finetune", "inference"),
                        default="finetune")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of both sides (default: util/backend's choice)")
    parser.add_argument("--hparams", default="{}", help="PretrainingConfig / FinetuningConfig "
                        "overrides (JSON), e.g. a smaller model for a quick look")
    parser.add_argument("--top", type=int, default=20, help="ops listed per side")
    parser.add_argument("--compare-hf", action="store_true",
                        help="also profile HuggingFace PyTorch ELECTRA (torch, transformers)")
    parser.add_argument("--json", default=None, help="also write both profiles to this file")
    parser.add_argument("--side", choices=("tf", "hf"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--info", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.threads_given = args.threads is not None
    if args.threads is None:
        args.threads = backend.detect_machine().usable_cores
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.side:  # a child: profile one side, print its JSON as the last line
        args.impl, args.backend = args.side, "auto"
        result = profile_side(args)
        print(json.dumps(result))
        return
    results = {"ours": run_side("tf", args)}
    if args.compare_hf:
        results["HF"] = run_side("hf", args, results["ours"]["info"])
    print(f"{args.workload}, {args.precision}, batch {args.batch} x {args.seq}, "
          f"{args.threads} threads, {args.steps} profiled steps")
    for name, result in results.items():
        print_side(name, result, args.top)
    print_kinds(results)
    if args.json:
        from util import io_utils  # pylint: disable=import-outside-toplevel
        io_utils.write_json(results, args.json, indent=1)


if __name__ == "__main__":
    main()
