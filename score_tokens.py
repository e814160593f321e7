"""Shows what a pre-trained ELECTRA model thinks of a text.

Prints each wordpiece with the discriminator's probability that it was replaced, and
for each literal [MASK] in the text the generator's top-5 fill-ins:
  python3 score_tokens.py --data-dir $DATA_DIR --model-name electra_small \
      --text "the quick brown [MASK] jumps over the lazy dog" [--json out.json]
Model sizes come from <model_dir>/pretrain_config.json when present, else --hparams.
"""

import util.cpu_setup  # noqa: F401  first: TensorFlow's CPU settings before it loads
import argparse

from util import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="Location of data files.")
    parser.add_argument("--model-name", required=True,
                        help="Model in <data-dir>/models/<model-name>.")
    parser.add_argument("--hparams", default="{}",
                        help="JSON dict (or .json path) of model hyperparameters.")
    parser.add_argument("--text", required=True, help="Text to score; may contain [MASK].")
    parser.add_argument("--json", default=None, help="Also write the scores to this file.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after argument parsing so --help does not start TensorFlow.
    from pretrain import scoring  # pylint: disable=import-outside-toplevel
    from util import io_utils  # pylint: disable=import-outside-toplevel
    from util.logging_utils import log  # pylint: disable=import-outside-toplevel
    config = scoring.make_scoring_config(args.data_dir, args.model_name, args.hparams)
    scorer = scoring.TokenScorer(config)
    scores = scorer.score(args.text)
    log(f"Scores from {scorer.checkpoint_path}")
    for line in scoring.format_scores(scores):
        log(line)
    if args.json:
        io_utils.write_json(scores.to_json(), args.json, indent=2)


if __name__ == "__main__":
    cli.run_main(main)
