"""Distillation on validation: which teacher signal and settings make the best student.

    python benchmarks/distill.py --data ../shared/data/meli2019-es --teacher DIR [--student mlp]
                                 [--settings NAME ...] [--lock /tmp/titlecat-cpu.lock]

``--teacher DIR`` is an ensemble trained on the training rows of the shipped validation split
*without* its refit (``train.refit=false`` in every member config), so that nothing it knows comes
from the validation rows: ``--make-teacher DIR`` writes such configs and trains it (about as long as
the ensemble's trainings without their refits).  For each setting of ``SETTINGS`` (or those named),
a student (configs/<student>.yaml with the setting, ``train.refit=false``) learns from the teacher's
logits of its training rows and, where the setting says, of a transfer set made from them
(``titlecat distill``); it is scored on the validation rows, beside the teacher and the student's
config trained without a teacher on the same rows.  The test file is never read: this is how the
shipped student config (configs/mlp-distill.yaml) was chosen.  Each training holds ``--lock`` (the
machine's shared benchmark lock) while it runs.  The teacher's logits are kept in the preprocessing
cache (``$TITLECAT_CACHE``), so each title is scored once over all settings.
Writes benchmarks/results/distill.md (also printed) and distill.json; with ``--append``, adds the
settings run to those already in distill.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import titlecat
from titlecat.tracking import file_lock  # the machine's shared benchmark lock (--lock)
from _measure import RESULTS  # benchmarks/ is on sys.path when run as a script
from titlecat.config import Config

DROP = {"distill.temperature": 2, "distill.alpha": 0.5, "distill.transfer": 4, "distill.transfer_ops": ["dropout"]}
# name -> (what it tries, settings); "distill.*" settings make it a student, none: the plain config
SETTINGS = {
    "plain": ("no teacher", {}),
    "T1": ("training rows only, T = 1, alpha 0.5", {"distill.temperature": 1, "distill.alpha": 0.5}),
    "T2": ("training rows only, T = 2, alpha 0.5", {"distill.temperature": 2, "distill.alpha": 0.5}),
    "T4": ("training rows only, T = 4, alpha 0.5", {"distill.temperature": 4, "distill.alpha": 0.5}),
    "T2a9": ("training rows only, T = 2, alpha 0.9", {"distill.temperature": 2, "distill.alpha": 0.9}),
    "X4": ("+ transfer 4 per title (dropout, crop, mix), T = 2, alpha 0.5",
           {"distill.temperature": 2, "distill.alpha": 0.5, "distill.transfer": 4}),
    "X4T1": ("+ transfer 4 per title (dropout, crop, mix), T = 1, alpha 0.5",
             {"distill.temperature": 1, "distill.alpha": 0.5, "distill.transfer": 4}),
    "X4T4": ("+ transfer 4 per title (dropout, crop, mix), T = 4, alpha 0.5",
             {"distill.temperature": 4, "distill.alpha": 0.5, "distill.transfer": 4}),
    "X4drop": ("+ transfer 4 per title (dropout only), T = 2, alpha 0.5",
               {"distill.temperature": 2, "distill.alpha": 0.5, "distill.transfer": 4,
                "distill.transfer_ops": ["dropout"]}),
    "X4mix": ("+ transfer 4 per title (mix only), T = 2, alpha 0.5",
              {"distill.temperature": 2, "distill.alpha": 0.5, "distill.transfer": 4, "distill.transfer_ops": ["mix"]}),
    "X8": ("+ transfer 8 per title (dropout, crop, mix), T = 2, alpha 0.5",
           {"distill.temperature": 2, "distill.alpha": 0.5, "distill.transfer": 8}),
    # the second round: token dropout alone, around the best of the first
    "D4seed": ("as X4drop, student seed 43 (how much one training varies)",
               {**DROP, "train.seed": 43}),
    "D4T4": ("+ transfer 4 per title (dropout only), T = 4, alpha 0.5", {**DROP, "distill.temperature": 4}),
    "D4a8": ("+ transfer 4 per title (dropout only), T = 2, alpha 0.8", {**DROP, "distill.alpha": 0.8}),
    "D4p5": ("+ transfer 4 per title (dropout 0.5), T = 2, alpha 0.5", {**DROP, "distill.transfer_dropout": 0.5}),
    "D8": ("+ transfer 8 per title (dropout only), T = 2, alpha 0.5", {**DROP, "distill.transfer": 8}),
    "D4e20": ("+ transfer 4 per title (dropout only), T = 2, alpha 0.5, 20 epochs", {**DROP, "train.epochs": 20}),
    "D4a8seed": ("as D4a8, student seed 43", {**DROP, "distill.alpha": 0.8, "train.seed": 43}),
    "D4a1": ("+ transfer 4 per title (dropout only), T = 2, alpha 1: no label", {**DROP, "distill.alpha": 1.0}),
    # the teacher's signal: what its logits of the titles it learned add to their labels
    "D4a0": ("as X4drop, but the training titles learn their labels alone (alpha 0): the teacher only on "
             "the transfer set", {**DROP, "distill.alpha": 0.0}),
}


def make_teacher(data: Path, out: Path, lock: Path | None) -> None:
    """The shipped ensemble trained without refits, into ``out`` (its members' configs beside it)."""
    ens = Config.default("ensemble")
    configs = out.with_name(out.name + "-configs")
    configs.mkdir(parents=True, exist_ok=True)
    members = []
    for name in ens.model.members:
        path = configs / f"{name}.yaml"
        Config.default(name).with_overrides({"train.refit": False}).to_yaml(path)
        members.append(str(path))
    cfg = ens.with_overrides({"model.members": members})
    with file_lock(lock):
        titlecat.train(data / "spanish.train.jsonl.gz", config=cfg, output=out, tracking=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/meli2019-es"))
    ap.add_argument("--teacher", type=Path, required=True, help="the ensemble trained without refit (see above)")
    ap.add_argument("--make-teacher", action="store_true", help="train it first, into --teacher")
    ap.add_argument("--student", default="mlp", help="the student's shipped config (default: mlp)")
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), help="names of SETTINGS to run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a further setting for every student")
    ap.add_argument("--lock", type=Path, help="hold this lock file during each training (flock)")
    ap.add_argument("--append", action="store_true", help="keep the rows already in distill.json")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    train_file = args.data / "spanish.train.jsonl.gz"
    started = time.perf_counter()
    if args.make_teacher:
        make_teacher(args.data, args.teacher, args.lock)
    teacher = titlecat.load(args.teacher)
    if any(m.held_out is not None or m.info.refitted for m in getattr(teacher, "members", [teacher])):
        raise SystemExit(f"{args.teacher}: refitted on the validation rows; the study needs a teacher trained without")
    json_path = args.output / f"distill-{args.student}.json"
    old = json.loads(json_path.read_text()) if args.append and json_path.exists() else {}
    rows = [r for r in old.get("rows", []) if r["name"] not in args.settings]
    teacher_val = teacher.validate(train_file)["balanced_accuracy"]
    for name in args.settings:
        what, setting = SETTINGS[name]
        base = Config.default(args.student).with_overrides({"train.refit": False, **setting})
        cfg = base.with_overrides(args.set) if args.set else base
        with file_lock(args.lock):
            t = time.perf_counter()
            clf = titlecat.train(train_file, config=cfg, tracking=False,
                                 teacher=args.teacher if cfg.distill is not None else None)
            seconds = time.perf_counter() - t
        row = {"name": name, "what": what, "settings": {**setting, **dict(s.split("=", 1) for s in args.set)},
               "val_balanced_accuracy": clf.info.best_val_balanced_accuracy, "best_epoch": clf.info.best_epoch,
               "epochs": len(clf.info.history), "seconds": seconds, "teacher_seconds": clf.info.teacher_seconds}
        print(f"{name} ({what}): validation balanced accuracy {row['val_balanced_accuracy']:.4f}, "
              f"epoch {row['best_epoch']} of {row['epochs']}, {seconds:.0f} s", flush=True)
        rows.append(row)
    plain = next((r["val_balanced_accuracy"] for r in rows if r["name"] == "plain"), None)
    minutes = old.get("minutes", 0.0) + (time.perf_counter() - started) / 60
    lines = [
        f"Students ({args.student}, configs/{args.student}.yaml with each setting, no refit) of the shipped ensemble "
        f"trained without refit; balanced accuracy on the validation rows of split "
        f"{teacher.config.data.split_seed} of {train_file.name} (the test file is not read). "
        f"The teacher itself: {teacher_val:.4f}.",
        "",
        "| setting | what | val bal. acc. | vs no teacher | vs teacher | best epoch (of) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: list(SETTINGS).index(r["name"])):
        vs = f"{r['val_balanced_accuracy'] - plain:+.4f}" if plain is not None else "-"
        lines.append(f"| {r['name']} | {r['what']} | {r['val_balanced_accuracy']:.4f} | {vs} | "
                     f"{r['val_balanced_accuracy'] - teacher_val:+.4f} | {r['best_epoch']} ({r['epochs']}) | "
                     f"{r['seconds']:.0f} |")
    text = "\n".join([*lines, "", f"{len(rows)} trainings, {minutes:.1f} minutes on this machine (shared, "
                      "its load varying: the seconds compare poorly between rows)."]) + "\n"
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"distill-{args.student}.md").write_text(text)
    json_path.write_text(json.dumps({"teacher_val_balanced_accuracy": teacher_val, "rows": rows, "minutes": minutes},
                                    indent=2))


if __name__ == "__main__":
    main()
