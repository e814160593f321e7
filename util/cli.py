"""Command-line plumbing shared by run_pretraining.py and run_finetuning.py."""

import argparse
import os
import sys

# TensorFlow's C++ start-up chatter is not useful to users; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Exit codes (README "Long runs and faults"); 75 is util.preemption.EXIT_CODE, 69
# util.worker_loss.EXIT_CODE.
EXIT_USER_ERROR = 2  # bad hparams, missing or broken inputs
EXIT_OUTPUT_ERROR = 74  # EX_IOERR: an output could not be written (disk full, read-only)


def parse_run_args(description, argv=None):
    """The original's three flags: --data-dir, --model-name, --hparams."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True,
                                            help="Location of data files (model weights, etc).")
    parser.add_argument("--model-name", required=True,
                                            help="The name of the model being trained / fine-tuned.")
    parser.add_argument("--hparams", default="{}",
                                            help="JSON dict of model hyperparameters, or a path to a .json file.")
    return parser.parse_args(argv)


def run_main(fn):
    """Runs `fn()`, turning user-facing errors into one line and exit code 2, a failed
    write of an output (io_utils.OutputError) into one line and exit code 74, a
    training run stopped by SIGTERM / SIGINT (util/preemption.py) into its one line and
    exit code 75 (preemption.EXIT_CODE), and the loss of another multi_worker worker
    (util/worker_loss.py) into one line and exit code 69 (worker_loss.EXIT_CODE).

    Errors that are the user's to fix (bad hparams, missing files, bad data) are
    subclasses of ValueError/FileNotFoundError raised with a message that names the
    problem and the fix; a traceback adds nothing for them.
    """
    # pylint: disable=import-outside-toplevel
    from util.config_utils import ConfigError
    from util import io_utils, preemption, worker_loss
    try:
        return fn()
    except io_utils.OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_OUTPUT_ERROR)
    except (ConfigError, FileNotFoundError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except preemption.Preempted as e:  # SIGTERM / SIGINT: checkpoint saved, not an error
        print(str(e), file=sys.stderr)
        sys.exit(preemption.EXIT_CODE)
    except worker_loss.WorkerLost as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(worker_loss.EXIT_CODE)


class UserError(ValueError):
    """A problem with the user's inputs (data, checkpoint, vocab) with a clear fix."""


def str2bool(value):
    """argparse type for boolean flags given as true/false, yes/no, 1/0."""
    lowered = str(value).strip().lower()
    if lowered in ("true", "t", "yes", "y", "1"):
        return True
    if lowered in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
