"""Distribution strategy selection by hparam and per-replica input pipelines.

`get_strategy(name)` maps the `distribution_strategy` hparam onto tf.distribute:
"one_device" (one GPU if present, else the CPU), "mirrored" (all local GPUs, else
all logical CPU devices),
"multi_worker" (MultiWorkerMirroredStrategy configured by the TF_CONFIG environment
variable) and "tpu" (TPUClusterResolver + TPUStrategy). Inputs are built per replica
with `strategy.distribute_datasets_from_function`, each replica reading its own shard
with a batch of global_batch_size / num_replicas_in_sync.

Under "multi_worker" TensorFlow's coordination service (run by the chief) watches the
workers' heartbeats: once one stays silent for `heartbeat_timeout_secs` (it died, froze
or lost the network), every other worker's pending collective fails, so no worker
waits forever (util/worker_loss.py turns that into one line and exit code 69).
"""

import json
import os

import tensorflow as tf

from util import backend
from util.cli import UserError

STRATEGY_NAMES = ("one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name, tpu_name=None, tpu_zone=None, gcp_project=None,
                 heartbeat_timeout_secs=None):
    """Builds the tf.distribute strategy named by the `distribution_strategy` hparam.

    Must be called before any other TensorFlow op runs: multi-worker and TPU
    strategies configure the runtime and cannot do so once it has started.

    Args:
      name: one of STRATEGY_NAMES.
      tpu_name, tpu_zone, gcp_project: Cloud TPU location (name "tpu" only); a None
        tpu_name lets the resolver use the TPU_NAME environment / local TPU.
      heartbeat_timeout_secs: "multi_worker" only: seconds without a heartbeat after
        which a worker counts as dead (None: TensorFlow's default, 10 s).
    Returns:
      A tf.distribute.Strategy.
    Raises:
      UserError: unknown name, malformed TF_CONFIG, or no TPU reachable.
    """
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        # All GPUs; without GPUs, every logical CPU device (tests split the CPU in two).
        devices = (tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU"))
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        cluster = _check_tf_config()
        if heartbeat_timeout_secs is not None:
            _configure_heartbeats(cluster, heartbeat_timeout_secs)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu_name, tpu_zone, gcp_project)
    raise UserError(f"unknown distribution_strategy {name!r}; use one of {STRATEGY_NAMES}.")


def _check_tf_config():
    """Fails early with a clear message instead of a hang on a bad TF_CONFIG.

    Returns:
      TF_CONFIG's cluster dict ({job name: [host:port, ...]}).
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError(
            "distribution_strategy 'multi_worker' needs the TF_CONFIG environment variable, "
            "e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:port\", \"host2:port\"]}, "
            "\"task\": {\"type\": \"worker\", \"index\": 0}}' on each worker.")
    try:
        tf_config = json.loads(raw)
        workers = tf_config["cluster"]["worker"]
        index = tf_config["task"]["index"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not valid ({e!r}); it needs cluster.worker (a list "
                        "of host:port) and task.index.") from None
    if not 0 <= int(index) < len(workers):
        raise UserError(f"TF_CONFIG task.index {index} is outside the {len(workers)} workers "
                        "listed in cluster.worker.")
    return tf_config["cluster"]


def _configure_heartbeats(cluster, timeout_secs):
    """Sets the coordination service's heartbeat timeout before the strategy starts it.

    MultiWorkerMirroredStrategy configures the service itself (with TensorFlow's default
    timeout) only when nothing configured it before, so this is the configuration it
    would make plus the timeout, exactly as TensorFlow's ParameterServerStrategy does.
    There is no public API for it; the collective-op timeout that is public
    (CommunicationOptions.timeout_seconds) is no substitute: it starts one sleeping
    thread per collective for the whole timeout (measured: 1600 threads after 20 s at
    a 60 s timeout) and would also fire while a worker legitimately waits for the
    chief's checkpoint or evaluation.
    """
    # pylint: disable=import-outside-toplevel
    from tensorflow.python.distribute import collective_all_reduce_strategy
    from tensorflow.python.eager import context
    job_proto = collective_all_reduce_strategy.coordination_config_pb2.CoordinatedJob
    leader = "chief" if cluster.get("chief") else "worker"
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{leader}/replica:0/task:0",
        coordinated_jobs=[job_proto(name=job, num_tasks=len(cluster[job]))
                          for job in ("chief", "worker") if cluster.get(job)],
        heartbeat_timeout_in_ms=int(timeout_secs * 1000))


def _tpu_strategy(tpu_name, tpu_zone, gcp_project):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu_name, zone=tpu_zone, project=gcp_project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise UserError(
            f"distribution_strategy 'tpu' found no TPU (tpu_name={tpu_name!r}): {e}. Set "
            "tpu_name (and tpu_zone, gcp_project) to a reachable Cloud TPU, or use "
            "'one_device', 'mirrored' or 'multi_worker'.") from None
    return tf.distribute.TPUStrategy(resolver)


def per_replica_batch_size(strategy, global_batch_size, name="train_batch_size"):
    """global_batch_size / num_replicas_in_sync, which must divide exactly."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise UserError(
            f"{name}={global_batch_size} is not divisible by the {replicas} replicas of the "
            f"distribution strategy; use a multiple of {replicas}.")
    return global_batch_size // replicas


def distribute_dataset(strategy, dataset_fn, global_batch_size, name="train_batch_size"):
    """Builds one input pipeline per replica (worker) and distributes it.

    Args:
      strategy: the tf.distribute.Strategy.
      dataset_fn: fn(input_context: tf.distribute.InputContext, batch_size: int) ->
        tf.data.Dataset of per-replica batches of `batch_size` examples; it should
        shard its input by input_context.input_pipeline_id.
      global_batch_size: examples per step summed over all replicas.
      name: the hparam holding global_batch_size, for the error message.
    Returns:
      A tf.distribute.DistributedDataset.
    """
    batch_size = per_replica_batch_size(strategy, global_batch_size, name)

    def replica_dataset(input_context):
        return dataset_fn(input_context, batch_size)

    return strategy.distribute_datasets_from_function(replica_dataset)


def is_multi_worker(strategy):
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not resolver:
        return False
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, [])) for job in ("chief", "worker")) > 1


def is_chief(strategy):
    """True on the worker that writes checkpoints, summaries and results.

    Single-worker strategies are always chief; under MultiWorkerMirroredStrategy the
    chief is task "chief", or worker 0 when the cluster has no "chief" task.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def batch_shards(strategy, jit_compile):
    """Slices per batch for fine-tuning and inference (model/batch_sharding.py):
    ELECTRA_BATCH_SHARDS on CPUs; 1 on GPUs and TPUs and under XLA, which schedule
    whole batches themselves and where the split was not measured."""
    if (jit_compile or isinstance(strategy, tf.distribute.TPUStrategy)
            or tf.config.list_physical_devices("GPU")):
        return 1
    return backend.batch_shards()
