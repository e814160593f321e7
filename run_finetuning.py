"""Fine-tunes and evaluates a pre-trained ELECTRA model on downstream tasks.

Usage (the original's flags):
  python3 run_finetuning.py --data-dir $DATA_DIR --model-name electra_small \
      --hparams '{"task_names": ["cola"]}'
"""

import util.cpu_setup  # noqa: F401  first: TensorFlow's CPU settings before it loads
from util import cli


def main(argv=None):
    args = cli.parse_run_args("Fine-tune and evaluate ELECTRA.", argv)
    # Imported after argument parsing so --help does not start TensorFlow.
    from finetune import finetune_runner  # pylint: disable=import-outside-toplevel
    config = finetune_runner.make_run_config(args.data_dir, args.model_name, args.hparams)
    finetune_runner.run_finetuning(config)


if __name__ == "__main__":
    cli.run_main(main)
