"""Test-session set-up: the backend settings the scripts apply (util/cpu_setup.py), made
before any test module imports TensorFlow, so the tests run the kernels and graph
rewrites users get. Without it, on CPUs where TensorFlow leaves oneDNN off by default
(most AVX2-only ones) the suite would test Eigen kernels the scripts never use, and
tests/test_graph_fusion.py would skip."""

import util.cpu_setup  # noqa: F401  pylint: disable=unused-import
