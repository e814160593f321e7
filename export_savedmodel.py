"""Exports a fine-tuned ELECTRA model as a TensorFlow SavedModel that takes raw text.

  python3 export_savedmodel.py \
      --model-dir $DATA_DIR/models/electra_small/finetuning_models/cola_model_1 \
      --output-dir serving/cola/1
The `serving_default` signature takes a batch of strings: "text" (single-sentence
tasks), "text_a" + "text_b" (pairs), "question" + "context" (QA) or "text" holding
whitespace-separated words (tagging), tokenised inside the graph. Load it with
`import tensorflow_text` then tf.saved_model.load, or serve it with TensorFlow Serving
(README "Export a SavedModel and serve it").
"""

import argparse

from util import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True,
                        help="Fine-tuned model dir: finetuning_models/<tasks>_model_<trial>.")
    parser.add_argument("--output-dir", required=True,
                        help="SavedModel directory to write (TensorFlow Serving wants "
                             "<model base path>/<version number>).")
    parser.add_argument("--task", default=None,
                        help="Task to export; required for a multi-task model.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace a non-empty --output-dir.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after argument parsing so --help does not start TensorFlow.
    from finetune import savedmodel_export  # pylint: disable=import-outside-toplevel
    return savedmodel_export.export(args.model_dir, args.output_dir, task=args.task,
                                    overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run_main(main)
