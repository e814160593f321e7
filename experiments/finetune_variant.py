"""Fine-tune one init of a learning study on one task with other fine-tuning settings.

Is a study result an artefact of its fine-tuning settings (one learning rate,
layer-wise decay and epoch count for every init)? This runs one init (random or a
saved checkpoint of the study's work dir) on one task with the given settings, for
`--seeds` seeds (the study's seeds: study.seed, +1, ...), and records the scores in
<work-dir>/variants/<name>.json; a variant already recorded is printed, not re-run.

A variant with the study's own settings (learning rate, decay, epochs and the number
of seeds the study plans for that init) is the study's unit itself (the same run, seed
for seed), so it is also recorded as that unit when the study lacks it: the study then
skips it and its report shows it. This lets one checkpoint's units run alone, e.g. the
final checkpoint's when the intermediate ones are not wanted.

Usage:
  python3 experiments/finetune_variant.py --hparams experiments/presets/temperature2.json \
      --work-dir study_work/temperature2 --init electra_4000 --task sst \
      [--learning-rate 1e-4] [--layerwise-lr-decay 1.0] [--epochs 3] [--seeds 3] [--quick]
      [--shared-data DIR]
"""

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position,unused-import
import util.cpu_setup  # noqa: E402,F401  TensorFlow's CPU settings before it loads
from util import cli  # noqa: E402
# pylint: enable=wrong-import-position,unused-import


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", required=True, help="the study's work dir")
    parser.add_argument("--hparams", default="{}", help="the study's --hparams")
    parser.add_argument("--quick", action="store_true", help="the study's --quick")
    parser.add_argument("--shared-data", default=os.path.join(
        os.path.dirname(REPO), "shared", "data"), help="the study's --shared-data (its "
        "vocab, unless the study learnt one from the corpus)")
    parser.add_argument("--init", required=True,
                        help="random, or <objective>_<step> of a saved checkpoint")
    parser.add_argument("--task", required=True)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--layerwise-lr-decay", type=float)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--seeds", type=int, default=3)
    return parser.parse_args(argv)


def resolve_init(study, dirs, name, seeds):
    """The study_finetune.Init named `name`; a clear error if it is not in the work dir."""
    from experiments import study_finetune  # pylint: disable=import-outside-toplevel
    if name == study_finetune.RANDOM:
        return study_finetune.Init(name, None, 0, seeds)
    objective, _, step = name.partition("_")
    valid = [f"{o}_{s}" for o in ("electra", "mlm") for s in study.objective_checkpoint_steps(o)]
    if name not in valid:
        raise cli.UserError(f"--init {name!r} is not one of this study's inits: random, "
                            f"{', '.join(valid)}.")
    if not os.path.exists(dirs.checkpoint_prefix(objective, int(step)) + ".index"):
        raise cli.UserError(f"--init {name}: no checkpoint "
                            f"{dirs.checkpoint_prefix(objective, step)}; run the study's "
                            "pre-training stage first.")
    return study_finetune.Init(name, objective, int(step), seeds)


VARIANT_KEYS = ("learning_rate", "layerwise_lr_decay", "num_train_epochs")


def adopt_as_study_unit(study, dirs, init, task, record):
    """Saves `record` as the study's own unit of init x task if it ran with the study's
    settings and the study has no record of that unit yet. Returns the unit's path or
    None."""
    # pylint: disable=import-outside-toplevel
    from experiments import study_finetune, study_units
    planned = {i.name: i for i in study_finetune.plan_inits(study)}[init.name]
    own = study_finetune.finetune_hparams(study, dirs, planned, task)
    if init.seeds != planned.seeds or any(record[k] != own[k] for k in VARIANT_KEYS):
        return None
    path = dirs.unit_path("finetune", f"{init.name}__{task}")
    if os.path.exists(path):
        return None
    study_units.save_unit(path, {k: v for k, v in record.items() if k not in VARIANT_KEYS})
    return path


def main(argv=None):
    args = parse_args(argv)
    # pylint: disable=import-outside-toplevel
    from experiments import study_config, study_finetune, study_units
    from util import config_utils, io_utils
    study = study_config.make_study_config(args.quick, args.hparams)
    if args.task not in study.tasks:
        raise cli.UserError(f"--task {args.task!r} is not one of the study's tasks "
                            f"{list(study.tasks)}.")
    dirs = study_units.StudyDirs(os.path.abspath(args.work_dir),
                                 os.path.abspath(args.shared_data), "",
                                 corpus_vocab=study.corpus_vocab_size is not None)
    if not os.path.exists(dirs.config_path):
        raise cli.UserError(f"--work-dir {dirs.work_dir} holds no study ({dirs.config_path} "
                            "is missing); run experiments/learning_study.py there first.")
    # The same settings as the study that made the work dir, or a clear error.
    study_units.check_work_dir_config(config_utils.config_to_dict(study), dirs.config_path,
                                      study_config.ADDED_SETTINGS)
    init = resolve_init(study, dirs, args.init, args.seeds)
    overrides = {key: value for key, value in (
        ("learning_rate", args.learning_rate), ("num_train_epochs", args.epochs),
        ("layerwise_lr_decay", args.layerwise_lr_decay)) if value is not None}
    hparams = {**study_finetune.finetune_hparams(study, dirs, init, args.task), **overrides}
    name = (f"{init.name}__{args.task}__lr{hparams['learning_rate']:g}"
            f"_decay{hparams['layerwise_lr_decay']:g}_epochs{hparams['num_train_epochs']:g}"
            f"_seeds{args.seeds}")
    path = os.path.join(dirs.work_dir, "variants", name + ".json")
    if not os.path.exists(path):
        overrides["pretrained_model_dir"] = dirs.finetune_run_dir("variants", name)
        record = study_finetune.run_finetune_unit(study, dirs, init, args.task, overrides,
                                                  run_name="variant_" + name)
        io_utils.mkdir(os.path.dirname(path))
        study_units.save_unit(path, {**record, **{k: hparams[k] for k in VARIANT_KEYS}})
    record = study_units.load_unit(path)
    adopted = adopt_as_study_unit(study, dirs, init, args.task, record)
    if adopted:
        print(f"[variant] the study's own settings: recorded as its unit {adopted}")
    print(f"[variant] {name}: {record['metric']} median {record['median']:.2f} "
          f"(seeds: {', '.join(f'{s:.2f}' for s in record['scores'])})")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    cli.run_main(main)
