"""Pre-trains an ELECTRA model (or evaluates it with {"do_train": false, "do_eval": true}).

Usage (the original's flags):
  python3 run_pretraining.py --data-dir $DATA_DIR --model-name electra_small_owt \
      --hparams '{"debug": true}'
Re-running the same command resumes from the latest checkpoint in
<data-dir>/models/<model-name>.
"""

import util.cpu_setup  # noqa: F401  first: TensorFlow's CPU settings before it loads
from util import cli


def main(argv=None):
    args = cli.parse_run_args("Pre-train or evaluate an ELECTRA model.", argv)
    # Imported after argument parsing so --help does not start TensorFlow.
    import configure_pretraining  # pylint: disable=import-outside-toplevel
    from pretrain import pretrain_runner  # pylint: disable=import-outside-toplevel
    config = configure_pretraining.make_config(args.data_dir, args.model_name, args.hparams)
    pretrain_runner.run_pretraining(config)


if __name__ == "__main__":
    cli.run_main(main)
