"""Picks TensorFlow's CPU backend settings for the machine: oneDNN, thread counts, precision.

TensorFlow reads its backend settings from environment variables once, when it starts,
so `apply()` must run before `import tensorflow`; the scripts do that by importing
util/cpu_setup.py first. Each setting is only a default: a variable the user has set
wins and is reported as such.

* TF_ENABLE_ONEDNN_OPTS=1 on x86-64. TensorFlow turns oneDNN on by itself only on CPUs
  with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; elsewhere (most AVX2 CPUs) it runs
  Eigen's kernels, which did a 4096x4096 float32 matmul at about half oneDNN's speed
  (issue 10). Results agree within float32 round-off (tests/test_backend.py).
* TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS = the usable physical cores: the
  CPUs this process may run on (affinity), one per core (SMT siblings share the
  matmul units, as PyTorch's default assumes), capped by a cgroup CPU quota, which
  TensorFlow ignores: in a container limited to 2 CPUs on a 64-core host it would run
  64 threads on 2 CPUs' worth of time.
* ELECTRA_WEIGHT_GRAD_MATMUL, this project's own: which kernel computes the dense layers'
  weight gradients x^T dy in float32 training, "eigen" or "onednn". oneDNN's sgemm does
  this long-reduction product ([in, B*S] x [B*S, out]) at half Eigen's speed on an AVX2
  CPU (AMD EPYC Zen 3: 31 against 16 ms at ELECTRA-Small's [256, 4096] x [4096, 1024];
  fine-tuning step -14%, pre-training step -13%; bench/bench_matmul_shapes.py), so
  "eigen" on x86-64 CPUs without AVX-512, "onednn" (TensorFlow's own choice) elsewhere
  until measured there.
* ELECTRA_LAYER_NORM, this project's own: "fused" runs float32 LayerNorm as oneDNN's
  single kernel (_MklLayerNorm) with an XLA-compiled gradient, "ops" as TensorFlow's
  five reductions and element-wise ops. "fused" on x86-64 (a third of the time forward,
  about half forward + backward at ELECTRA-Small's [4096, 256]); model/layer_norm.py
  falls back to "ops" where the kernel cannot run (no such kernel in the build, a GPU,
  inside XLA).
* ELECTRA_BATCH_SHARDS, this project's own: how many independent slices fine-tuning
  and inference split each batch into inside one step (finetune/finetune_model.py).
  The slices share no ops until their losses and outputs are joined, so TensorFlow's
  executor can run one slice's ops while the other's wait for a core, instead of
  one chain of ops each ending at a barrier. "2" on x86-64 with at least two cores
  (AMD EPYC Zen 3, 2 cores, ELECTRA-Small batch 32, round-robin against whole batches
  in one run: fine-tuning step -2 to -9%, inference -8 to -15%), "1" elsewhere.
  Only the order of float additions and the dropout draws change.
* `auto_precision()`: the `"mixed_precision": "auto"` hparam means bfloat16 only where
  the CPU computes it natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo); elsewhere
  bfloat16 is emulated and slower than float32, so "auto" means float32.

No TensorFlow import here: this module runs before it.
"""

import dataclasses
import math
import os
import platform
import sys
from collections.abc import MutableMapping

ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"
INTRA_OP_VAR = "TF_NUM_INTRAOP_THREADS"
INTER_OP_VAR = "TF_NUM_INTEROP_THREADS"
WEIGHT_GRAD_VAR = "ELECTRA_WEIGHT_GRAD_MATMUL"
WEIGHT_GRAD_KERNELS = ("eigen", "onednn")
LAYER_NORM_VAR = "ELECTRA_LAYER_NORM"
LAYER_NORM_KERNELS = ("fused", "ops")
BATCH_SHARDS_VAR = "ELECTRA_BATCH_SHARDS"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# What apply() found and did in this process (None until it runs); read by describe().
_APPLIED = None


@dataclasses.dataclass(frozen=True)
class Machine:
    """What the settings are derived from (the real machine, or a fake one in tests)."""

    arch: str  # platform.machine(), e.g. "x86_64", "aarch64"
    cpu_flags: frozenset  # the "flags" of /proc/cpuinfo; empty where unknown
    usable_cores: int  # physical cores this process may use, quota included


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: its value and who chose it."""

    var: str
    value: str | None  # None: left unset, TensorFlow decides
    source: str  # "auto", "environment" (set by the user) or "TensorFlow default"
    reason: str  # why this value


def read_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The CPU feature flags (first "flags" line), or an empty set where unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time the cgroup quota allows (cgroup v2, then v1); None: no quota."""
    v2 = _read(os.path.join(root, "cpu.max"))  # "max 100000" or "200000 100000"
    if v2:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    quota = _read(os.path.join(root, "cpu", "cpu.cfs_quota_us"))
    period = _read(os.path.join(root, "cpu", "cpu.cfs_period_us"))
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def physical_cores(cpus: set[int], sysfs: str = "/sys/devices/system/cpu") -> int:
    """Distinct (package, core) pairs among `cpus`; len(cpus) where sysfs is missing."""
    cores = set()
    for cpu in cpus:
        topology = os.path.join(sysfs, f"cpu{cpu}", "topology")
        core = (_read(os.path.join(topology, "physical_package_id")),
                _read(os.path.join(topology, "core_id")))
        cores.add(core if None not in core else ("cpu", cpu))
    return max(1, len(cores))


def detect_machine(cpuinfo: str = "/proc/cpuinfo", sysfs: str = "/sys/devices/system/cpu",
                   cgroup_root: str = "/sys/fs/cgroup") -> Machine:
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(
        range(os.cpu_count() or 1))
    cores = physical_cores(cpus, sysfs)
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cores = max(1, min(cores, math.ceil(limit)))
    return Machine(platform.machine().lower(), read_cpu_flags(cpuinfo), cores)


def has_native_bf16(cpu_flags: frozenset) -> bool:
    return any(flag in cpu_flags for flag in BF16_FLAGS)


def auto_precision(machine: Machine | None = None) -> str:
    """What `"mixed_precision": "auto"` means on this machine: bfloat16 or float32."""
    machine = machine or detect_machine()
    return "bfloat16" if has_native_bf16(machine.cpu_flags) else "float32"


def _choose(env: MutableMapping, var: str, auto: str | None, reason: str) -> Setting:
    if var in env:
        return Setting(var, env[var], "environment", "set before start-up")
    if auto is None:
        return Setting(var, None, "TensorFlow default", reason)
    return Setting(var, auto, "auto", reason)


def resolve(machine: Machine, env: MutableMapping) -> list[Setting]:
    """The backend settings for `machine`, the user's environment variables winning."""
    x86 = machine.arch in ("x86_64", "amd64", "x64")
    onednn = _choose(env, ONEDNN_VAR, "1" if x86 else None,
                     "x86-64: on whatever the CPU (TensorFlow enables it only with "
                     "AVX512_VNNI/AVX512_BF16/AVX_VNNI/AMX)" if x86
                     else "not x86-64: TensorFlow's own choice")
    threads = str(machine.usable_cores)
    why = "usable physical cores (affinity, SMT, cgroup quota)"
    avx2_only = x86 and "avx512f" not in machine.cpu_flags
    weight_grad = _choose(env, WEIGHT_GRAD_VAR, "eigen" if avx2_only else "onednn",
                          "x86-64 without AVX-512: Eigen does x^T dy at twice oneDNN's "
                          "speed" if avx2_only else "the matmul kernel TensorFlow picks")
    layer_norm = _choose(env, LAYER_NORM_VAR, "fused" if x86 else "ops",
                         "x86-64: oneDNN's fused LayerNorm kernel" if x86
                         else "not x86-64: TensorFlow ops")
    shard = x86 and machine.usable_cores >= 2
    shards = _choose(env, BATCH_SHARDS_VAR, "2" if shard else "1",
                     "x86-64, 2+ cores: two independent half-batches per step" if shard
                     else "one core or not x86-64: whole batches")
    return [onednn, _choose(env, INTRA_OP_VAR, threads, why),
            _choose(env, INTER_OP_VAR, threads, why), weight_grad, layer_norm, shards]


def _kernel_setting(env, var, choices, default):
    value = (os.environ if env is None else env).get(var, default)
    if value not in choices:
        raise ValueError(f"{var}={value!r}: must be one of {', '.join(choices)} (or "
                         f"unset it for the automatic choice).")
    return value


def weight_grad_matmul(env: MutableMapping | None = None) -> str:
    """The kernel for float32 weight gradients: ELECTRA_WEIGHT_GRAD_MATMUL as apply() or
    the user set it; "onednn" (TensorFlow's matmul) where neither did."""
    return _kernel_setting(env, WEIGHT_GRAD_VAR, WEIGHT_GRAD_KERNELS, "onednn")


def layer_norm_kernel(env: MutableMapping | None = None) -> str:
    """The float32 LayerNorm kernel: ELECTRA_LAYER_NORM as apply() or the user set it;
    "ops" (TensorFlow's own ops) where neither did."""
    return _kernel_setting(env, LAYER_NORM_VAR, LAYER_NORM_KERNELS, "ops")


def batch_shards(env: MutableMapping | None = None) -> int:
    """Slices per fine-tuning / inference batch: ELECTRA_BATCH_SHARDS as apply() or the
    user set it; 1 where neither did."""
    value = (os.environ if env is None else env).get(BATCH_SHARDS_VAR, "1")
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{BATCH_SHARDS_VAR}={value!r}: must be a whole number >= 1 (1 "
                         f"turns the split off), or unset it for the automatic choice.")
    return int(value)


def apply(env: MutableMapping | None = None, machine: Machine | None = None
          ) -> list[Setting]:
    """Sets the automatic values of the variables the user has not set.

    Call before TensorFlow is imported (TensorFlow reads them when it starts).
    """
    global _APPLIED  # pylint: disable=global-statement
    env = os.environ if env is None else env
    if env is os.environ and "tensorflow" in sys.modules:
        return []  # too late: TensorFlow has read its settings; describe() says so
    machine = machine or detect_machine()
    settings = resolve(machine, env)
    for setting in settings:
        if setting.source == "auto":
            env[setting.var] = setting.value
    _APPLIED = (machine, settings)
    return settings


def describe() -> list[str]:
    """`key value (why)` lines of the settings in effect, for the printed config."""
    if _APPLIED is None:
        return ["backend TensorFlow's defaults (util/cpu_setup.py was not imported before "
                "TensorFlow)"]
    machine, settings = _APPLIED
    lines = [f"backend {s.var}={s.value if s.value is not None else '(unset)'} "
             f"({s.source}: {s.reason})" for s in settings]
    lines.append(f"backend native_bf16 {has_native_bf16(machine.cpu_flags)} "
                 f"(\"mixed_precision\": \"auto\" -> {auto_precision(machine)})")
    return lines
