"""bench/bench_matmul_shapes.py: the layer shapes it times, and one real tiny run that
prints every product of every layer with both kernels (and PyTorch where installed)."""

import importlib.util
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import bench_matmul_shapes  # noqa: E402  pylint: disable=wrong-import-position


def test_shapes_are_one_transformer_layers_dense_layers():
    assert bench_matmul_shapes.shapes(256, 1024) == [
        ("qkv", 256, 768), ("attention out", 256, 256), ("ffn in", 256, 1024),
        ("ffn out", 1024, 256)]


def test_tiny_run_prints_every_product_with_both_kernels():
    hf = importlib.util.find_spec("torch") is not None
    command = [sys.executable, os.path.join(REPO, "bench", "bench_matmul_shapes.py"),
               "--rows", "64", "--hidden", "16", "--ffn", "40", "--rounds", "1",
               "--calls", "1"] + (["--compare-hf"] if hf else [])
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ELECTRA_WEIGHT_GRAD_MATMUL would be" in result.stdout
    rows = re.findall(r"^(qkv|attention out|ffn in|ffn out)\s+(\d+x\d+) (forward|dx|dW)\s+(.*)$",
                      result.stdout, re.M)
    assert len(rows) == 12, result.stdout
    assert {(r[0], r[1]) for r in rows} == {("qkv", "16x48"), ("attention out", "16x16"),
                                            ("ffn in", "16x40"), ("ffn out", "40x16")}
    for *_, numbers in rows:
        values = [float(v) for v in numbers.split()]
        # ms per product of each kernel (and PyTorch), then the best GFLOP/s, which
        # rounds to 0.0 at these tiny sizes
        assert len(values) == (4 if hf else 3), numbers
        assert all(v > 0 for v in values[:-1]) and values[-1] >= 0, numbers
