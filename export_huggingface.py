"""Exports an ELECTRA checkpoint as a HuggingFace transformers model directory.

  python3 export_huggingface.py --checkpoint $DATA_DIR/models/electra_small_owt \
      --output-dir hf/electra_small_owt                      # ElectraForPreTraining
  python3 export_huggingface.py --checkpoint $DATA_DIR/models/electra_small_owt \
      --output-dir hf/electra_small_owt_generator --which generator  # ElectraForMaskedLM
A released checkpoint has no pretrain_config.json: give its sizes as for pre-training,
e.g. --model-size small --hparams '{"generator_hidden_size": 1.0}'. A fine-tuned model
dir exports its encoder (ElectraModel). The output loads with from_pretrained.
"""

import argparse

from configure_pretraining import MODEL_SIZES  # these two modules do not import TF
from model.hf_mapping import ARCHITECTURES
from util import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="Model dir (pre-training or fine-tuning) or checkpoint prefix.")
    parser.add_argument("--output-dir", required=True,
                        help="Directory to write; must be new or empty (see --overwrite).")
    parser.add_argument("--which", choices=tuple(ARCHITECTURES), default=None,
                        help="Network to export: discriminator (ElectraForPreTraining, the "
                             "default), generator (ElectraForMaskedLM) or encoder "
                             "(ElectraModel, the default for fine-tuned models).")
    parser.add_argument("--model-size", choices=MODEL_SIZES, default=None,
                        help="Model size; required when there is no pretrain_config.json.")
    parser.add_argument("--hparams", default="{}",
                        help="JSON dict (or .json path) of pre-training hparams that set the "
                             "sizes, e.g. '{\"generator_hidden_size\": 1.0}'.")
    parser.add_argument("--vocab-file", default=None,
                        help="vocab.txt to ship; default: the model's.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace a non-empty --output-dir.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after argument parsing so --help does not start TensorFlow.
    from pretrain import hf_export  # pylint: disable=import-outside-toplevel
    return hf_export.export(args.checkpoint, args.output_dir, which=args.which,
                            model_size=args.model_size, hparams=args.hparams,
                            vocab_file=args.vocab_file, overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run_main(main)
