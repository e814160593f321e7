"""The dense layers' matrix products at the model's own shapes, per kernel.

A 4096x4096 matmul says what a kernel can do at its best; a training step is made of
thinner products: per dense layer [M, in] x [in, out] forward (M = batch x length), the
input gradient dy W^T, and the weight gradient x^T dy, whose long reduction over M is
where TensorFlow's oneDNN sgemm and Eigen differ most (util/backend.py,
ELECTRA_WEIGHT_GRAD_MATMUL). This times each product of ELECTRA-Small's four dense
shapes (fused QKV, attention output, FFN in, FFN out) with oneDNN (TensorFlow's
rewritten MatMul / fused MatMul + BiasAdd) and with Eigen (BatchMatMulV3, which the
rewrite leaves alone; the weight gradient in model/modeling.py's orientation), rounds
alternated, medians; with --compare-hf, PyTorch's addmm / mm on the same shapes in
another process. It asserts nothing; use it to choose the setting on a new CPU.

  python3 bench/bench_matmul_shapes.py [--rows 4096] [--hidden 256] [--ffn 1024]
      [--rounds 5] [--calls 10] [--threads N] [--compare-hf]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from util import backend  # pylint: disable=wrong-import-position  (no TensorFlow import)


def shapes(hidden, ffn):
    """(name, in, out) of one transformer layer's dense layers."""
    return [("qkv", hidden, 3 * hidden), ("attention out", hidden, hidden),
            ("ffn in", hidden, ffn), ("ffn out", ffn, hidden)]


def time_rounds(variants, rounds, calls):
    """{name: median ms per call} of fns called `calls` times per round, rounds alternated;
    each fn returns something whose .numpy() / float() waits for the result."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                result = fn()
            getattr(result, "numpy", lambda: None)()
            times[name].append(1000 * (time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def tf_variants(rows, in_dim, out_dim):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from model import modeling  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(0)
    x, w, dy = (tf.constant(rng.normal(size=s).astype(np.float32))
                for s in ((rows, in_dim), (in_dim, out_dim), (rows, out_dim)))
    b = tf.zeros([out_dim])

    def v3(a, c, adj_x=False, adj_y=False):
        return tf.raw_ops.BatchMatMulV3(x=a[None], y=c[None], Tout=tf.float32, adj_x=adj_x,
                                        adj_y=adj_y)[0]
    fns = {
        "forward onednn": lambda: tf.nn.bias_add(tf.matmul(x, w), b),
        "forward eigen": lambda: tf.nn.bias_add(v3(x, w), b),
        "dx onednn": lambda: tf.matmul(dy, w, transpose_b=True),
        "dx eigen": lambda: v3(dy, w, adj_y=True),
        "dW onednn": lambda: modeling.weight_gradient(x, dy, "onednn"),
        "dW eigen": lambda: modeling.weight_gradient(x, dy, "eigen"),
    }
    variants = {name: tf.function(fn) for name, fn in fns.items()}
    for fn in variants.values():
        fn()  # trace and warm up
    return variants


def hf_variants(rows, in_dim, out_dim, threads):
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    x, w, dy = torch.randn(rows, in_dim), torch.randn(in_dim, out_dim), torch.randn(rows, out_dim)
    b = torch.zeros(out_dim)
    variants = {"forward": lambda: torch.addmm(b, x, w), "dx": lambda: dy @ w.t(),
                "dW": lambda: x.t() @ dy}
    for fn in variants.values():
        fn()
    return variants


def worker(args):
    """Runs in its own process: one side, all shapes; prints one JSON line."""
    out = {}
    for name, in_dim, out_dim in shapes(args.hidden, args.ffn):
        variants = (hf_variants(args.rows, in_dim, out_dim, args.threads) if args.side == "hf"
                    else tf_variants(args.rows, in_dim, out_dim))
        out[name] = time_rounds(variants, args.rounds, args.calls)
    print(json.dumps(out))


def run_side(side, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-c", "import util.cpu_setup, runpy, sys; sys.argv = sys.argv[1:]; "
               f"runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')",
               "x", "--side", side] + [f"--{k}={v}" for k, v in (
                   ("rows", args.rows), ("hidden", args.hidden), ("ffn", args.ffn),
                   ("rounds", args.rounds), ("calls", args.calls), ("threads", args.threads))]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        sys.exit(f"{side} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="batch x sequence length")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compare-hf", action="store_true")
    parser.add_argument("--side", choices=("tf", "hf"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads or backend.detect_machine().usable_cores
    if args.side:
        return worker(args)
    machine = backend.detect_machine()
    setting = backend.resolve(machine, os.environ)[-1]
    print(f"{args.threads} threads; {backend.WEIGHT_GRAD_VAR} would be {setting.value} "
          f"({setting.source}: {setting.reason}); native bfloat16 "
          f"{backend.has_native_bf16(machine.cpu_flags)}")
    ours = run_side("tf", args)
    peer = run_side("hf", args) if args.compare_hf else {}
    print(f"\nms per product, float32, M = {args.rows} rows (median of {args.rounds} rounds)")
    print(f"{'layer':14s} {'in x out':>10s} {'product':8s} {'oneDNN':>8s} {'Eigen':>8s} "
          f"{'PyTorch':>8s} {'best GFLOP/s':>12s}")
    for name, in_dim, out_dim in shapes(args.hidden, args.ffn):
        gflop = 2 * args.rows * in_dim * out_dim / 1e9
        for product in ("forward", "dx", "dW"):
            onednn, eigen = ours[name][f"{product} onednn"], ours[name][f"{product} eigen"]
            torch_ms = peer.get(name, {}).get(product)
            print(f"{name:14s} {f'{in_dim}x{out_dim}':>10s} {product:8s} {onednn:8.2f} "
                  f"{eigen:8.2f} {'' if torch_ms is None else f'{torch_ms:8.2f}':>8s} "
                  f"{gflop / min(onednn, eigen) * 1000:12.1f}")
    return None


if __name__ == "__main__":
    main()
