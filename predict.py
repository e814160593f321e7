"""Applies a fine-tuned ELECTRA model to a TSV, JSON-lines or plain-text file.

  python3 predict.py --model $DATA_DIR/models/electra_small/finetuning_models/cola_model_1 \
      --input sentences.txt --output predictions.jsonl
--model is a fine-tuned model dir (finetuning_models/<tasks>_model_<trial>; --task picks
one task of a multi-task model) or a SavedModel written by export_savedmodel.py. Input
columns / JSON fields are the model's inputs: text, text_a + text_b, question + context,
or text = whitespace-separated words for tagging. Formats follow the file extensions
(.tsv, .jsonl/.json, .txt) unless --input-format / --output-format are given.
"""

import util.cpu_setup  # noqa: F401  first: TensorFlow's CPU settings before it loads
import argparse

from util import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="Fine-tuned model dir or exported SavedModel dir.")
    parser.add_argument("--input", required=True, help="File with one example per line.")
    parser.add_argument("--output", required=True,
                        help="Predictions file (.tsv or .jsonl); written when complete.")
    parser.add_argument("--task", default=None,
                        help="Task of a multi-task fine-tuned model dir.")
    parser.add_argument("--input-format", choices=("tsv", "jsonl", "text"), default=None,
                        help="Input format; default: from the --input extension.")
    parser.add_argument("--output-format", choices=("tsv", "jsonl"), default=None,
                        help="Output format; default: from the --output extension.")
    parser.add_argument("--batch-size", type=int, default=32, help="Rows per model call.")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="Log and skip malformed rows instead of stopping at the first.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after argument parsing so --help does not start TensorFlow.
    from finetune import prediction  # pylint: disable=import-outside-toplevel
    predictor = prediction.load_predictor(args.model, args.task)
    return prediction.predict_file(predictor, args.input, args.output,
                                   input_format=args.input_format,
                                   output_format=args.output_format,
                                   batch_size=args.batch_size,
                                   skip_bad_rows=args.skip_bad_rows)


if __name__ == "__main__":
    cli.run_main(main)
