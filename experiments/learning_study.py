"""Learning study: does ELECTRA pre-training beat random init and MLM at equal compute?

Usage:
  python3 experiments/learning_study.py [--quick] [--work-dir DIR] [--out-dir DIR]
      [--shared-data DIR] [--stages data,pretrain,flops,pretrain_eval,finetune,report]
      [--hparams JSON] [--restore-from-report RESULTS_JSON]

Stages, in order (each finished unit records a JSON under <work-dir>/units/, so
re-running the same command resumes where a killed study stopped):
  data            pre-training TFRecords + subsampled fine-tuning task dirs
  pretrain_electra, pretrain_mlm (alias: pretrain)
                  ELECTRA and MLM-only pre-training at equal total FLOPs
  flops           analytic FLOPs per step of both objectives
  pretrain_eval   pre-training metrics of every saved checkpoint
  finetune        random init / each checkpoint x each task x seeds, scored on dev
  report          results.json, results.md and PNG plots (also after every stage)

--restore-from-report docs/.../results.json first writes back the unit records a committed
report holds (the work dir is not committed), so a new machine runs only what it lacks.
"""

import argparse
import os
import sys

# Run as a script, this file's directory is on sys.path instead of the repo root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position,unused-import
import util.cpu_setup  # noqa: E402,F401  TensorFlow's CPU settings before it loads
from util import cli  # noqa: E402
# pylint: enable=wrong-import-position,unused-import

STAGES = ("data", "pretrain_electra", "pretrain_mlm", "flops", "pretrain_eval", "finetune",
          "report")
STAGE_ALIASES = {"pretrain": ("pretrain_electra", "pretrain_mlm")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the QUICK preset: a tiny model and data, in a few minutes")
    parser.add_argument("--work-dir", help="intermediate files and unit records (default "
                        "<repo>/study_work/full, or <repo>/study_work/quick with --quick)")
    parser.add_argument("--out-dir", help="the report (default <repo>/docs/learning_study, "
                        "or <work-dir>/report with --quick)")
    parser.add_argument("--shared-data", default=os.path.join(
        os.path.dirname(REPO), "shared", "data"), help="the shared data (default "
        "../shared/data next to the repo)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="comma-separated stages to run, in the fixed order "
                        f"({', '.join(STAGES)}; 'pretrain' = both pre-training stages)")
    parser.add_argument("--hparams", default="{}",
                        help="JSON dict (or .json path) of StudyConfig overrides")
    parser.add_argument("--restore-from-report", metavar="RESULTS_JSON",
                        help="first restore the finished units recorded in this report "
                        "(a results.json made with the same config) into the work dir")
    return parser.parse_args(argv)


def parse_stages(text):
    """The requested stages in the study's fixed order; an unknown name is an error."""
    wanted = set()
    for name in filter(None, (s.strip() for s in text.split(","))):
        if name not in STAGES and name not in STAGE_ALIASES:
            raise cli.UserError(f"unknown stage {name!r} in --stages; valid: "
                                f"{', '.join(STAGES)}, pretrain.")
        wanted.update(STAGE_ALIASES.get(name, (name,)))
    if not wanted:
        raise cli.UserError("--stages names no stage.")
    return [s for s in STAGES if s in wanted]


def resolve_dirs(args, study):
    from experiments.study_units import StudyDirs  # pylint: disable=import-outside-toplevel
    work = args.work_dir or os.path.join(REPO, "study_work", "quick" if args.quick else "full")
    out = args.out_dir or (os.path.join(work, "report") if args.quick
                           else os.path.join(REPO, "docs", "learning_study"))
    return StudyDirs(os.path.abspath(work), os.path.abspath(args.shared_data),
                     os.path.abspath(out), corpus_vocab=study.corpus_vocab_size is not None)


def stage_units(stage, study, dirs):
    """The stage's list of study_units.Unit."""
    # pylint: disable=import-outside-toplevel
    from experiments import study_data, study_finetune, study_flops, study_pretrain
    from experiments.study_units import Unit
    if stage == "data":
        return [Unit("data", dirs.unit_path("data", "data"), True,
                     lambda: study_data.run_data(study, dirs))]
    if stage in ("pretrain_electra", "pretrain_mlm"):
        return study_pretrain.pretraining_units(study, dirs, stage[len("pretrain_"):])

    def flops_record():
        per_step = {o: study_flops.study_flops_per_step(study, o) for o in ("electra", "mlm")}
        return {"flops_per_step": per_step,
                "total_flops": {o: per_step[o] * study.steps(o) for o in per_step}}

    if stage == "flops":
        return [Unit("flops", dirs.unit_path("flops", "flops"), True, flops_record)]
    if stage == "pretrain_eval":
        return study_pretrain.eval_units(study, dirs)
    return study_finetune.finetune_units(study, dirs)


def run_study(study, dirs, stages):
    """Runs the stages in order; the report is rendered after every stage that ran
    something (and for an explicit `report` stage if nothing rendered it yet)."""
    # pylint: disable=import-outside-toplevel
    from experiments import study_report, study_units
    from util.logging_utils import heading

    def report():
        study_report.write_report(study, dirs)

    rendered = False
    for stage in stages:
        if stage == "report":
            if not rendered:
                report()
            continue
        heading(f"Stage {stage}")
        every = len(study.tasks) if stage == "finetune" else None
        if study_units.run_units(stage, stage_units(stage, study, dirs), report, every):
            report()
            rendered = True


def main(argv=None):
    args = parse_args(argv)
    stages = parse_stages(args.stages)
    # pylint: disable=import-outside-toplevel
    from experiments import study_config, study_data, study_units
    from util import config_utils
    from util.logging_utils import heading, log
    study = study_config.make_study_config(args.quick, args.hparams)
    dirs = resolve_dirs(args, study)
    study_data.check_shared_data(study, dirs.shared_dir)
    heading(f"Learning study ({'QUICK' if args.quick else 'FULL'} preset), stages: "
            f"{', '.join(stages)}")
    log(config_utils.format_config(study))
    log(f"work dir {dirs.work_dir}\nshared data {dirs.shared_dir}\nreport {dirs.out_dir}")
    study_units.check_work_dir_config(config_utils.config_to_dict(study), dirs.config_path,
                                      study_config.ADDED_SETTINGS)
    if args.restore_from_report:
        from experiments import study_restore  # pylint: disable=import-outside-toplevel
        study_restore.restore_from_report(study, dirs, os.path.abspath(args.restore_from_report),
                                          study_config.ADDED_SETTINGS)
    run_study(study, dirs, stages)


if __name__ == "__main__":
    cli.run_main(main)
