"""A dead worker under `multi_worker`: the others stop with one line and EXIT_CODE.

MultiWorkerMirroredStrategy cannot continue without a worker: every step all-reduces
the gradients of all of them. When one dies (killed, crashed, its machine gone), the
others learn it from TensorFlow itself: at once when its connection is reset, else when
its heartbeats to the coordination service stop for the timeout set by the
`worker_heartbeat_timeout_secs` hparam (util/distribute.py). TensorFlow then aborts
every pending and later collective with UnavailableError (or DeadlineExceededError
when the chief, which runs the coordination service, is the one that is gone).
`reported` turns those into `WorkerLost`: one line naming the lost worker and the
chief's latest checkpoint, exit code EXIT_CODE. Nothing is saved after the loss: the
failed step may have updated the weights but not `global_step`, and the chief's
previous checkpoint is complete (written atomically), so re-running every worker
with the same command continues from it.

This module does not import TensorFlow at import time, so util/cli.py can use it.
"""

import contextlib
import json
import os
import re

# EX_UNAVAILABLE of sysexits.h ("a service is unavailable"): a peer of the cluster is.
# Distinct from 75 (stopped on a signal, checkpoint saved at the step reached): here
# every worker must be restarted and the steps after the last checkpoint are redone.
EXIT_CODE = 69
# "/job:worker/replica:0/task:1" or "/job:worker/task:1" in TensorFlow's messages.
_TASK = re.compile(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)")


class WorkerLost(Exception):
    """A worker of the cluster is gone; this one stopped (scripts exit EXIT_CODE)."""


def _address(job, index):
    """host:port of TF_CONFIG's cluster[job][index], or None."""
    try:
        return json.loads(os.environ["TF_CONFIG"])["cluster"][job][index]
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _lost_worker(message, is_chief):
    """'worker 1 (host:port)' named in TensorFlow's message, else the best guess."""
    # The coordination service lists the silent tasks after this phrase.
    match = _TASK.search(message.split("stopped sending heartbeats", 1)[-1])
    if match:
        job, index = match.group(1), int(match.group(2))
    elif "CoordinationService" in message and not is_chief:
        # Its heartbeats got no answer: the coordination service, i.e. the chief, is gone.
        job, index = ("chief", 0) if _address("chief", 0) else ("worker", 0)
    else:
        return "another worker"
    address = _address(job, index)
    return f"{job} {index}" + (f" ({address})" if address else "")


def _cause(message):
    if "stopped sending heartbeats" in message:
        return "it stopped sending heartbeats"
    if "CoordinationService/Heartbeat" in message:
        return "its coordination service stopped answering heartbeats"
    if "Connection reset" in message or "Socket closed" in message:
        return "its connection was reset"
    first = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return "TensorFlow reported: " + first.split("aborted by: ")[-1].rstrip(".")


def worker_lost_message(message, is_chief, latest_checkpoint):
    """The one line for a collective that failed with TensorFlow's `message`."""
    if latest_checkpoint:
        resume = (f"nothing was saved after the chief's latest checkpoint "
                  f"{latest_checkpoint}; restart every worker with the same command to "
                  "continue from it.")
    else:
        resume = ("no checkpoint was saved yet; restart every worker with the same "
                  "command to start again.")
    return (f"Lost {_lost_worker(message, is_chief)} of the multi_worker cluster: "
            f"{_cause(message)}. This worker stopped; {resume}")


@contextlib.contextmanager
def reported(strategy, checkpoint_dir):
    """Turns a failed collective of a multi-worker `strategy` into WorkerLost.

    Args:
      strategy: the tf.distribute strategy (other strategies pass errors through).
      checkpoint_dir: where the chief's checkpoints are, named in the message.
    """
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from util import distribute
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
        if not distribute.is_multi_worker(strategy):
            raise
        latest = tf.train.latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
        raise WorkerLost(worker_lost_message(
            e.message, distribute.is_chief(strategy), latest)) from None
