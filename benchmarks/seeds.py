"""Do more seeds help the ensemble?  Each member trained at several seeds, scored on validation only.

    python benchmarks/seeds.py --data ../shared/data/meli2019-es [--splits 7 21] [--seeds 2]

Every member of the shipped ensemble (configs/ensemble.yaml's ``model.members``, each with its own
shipped config) is trained with ``train.seed`` + 0, + 1, ... on each validation split
(``data.split_seed``) carved from the training file; the shipped configs' own split (13) is left
out by default because the MLP was tuned on it.  The test file is never read: this is how the
ensemble's ``model.seeds`` was chosen.  Then, per split, the ensemble is scored on the same
validation rows with one seed per member (each seed on its own: what ``seeds: 1`` gives, one
training or another) and with every seed of every member (what ``seeds: N`` gives).  No MLflow
run is written.  Writes benchmarks/results/seeds.md (also printed) and seeds.json.
"""

from __future__ import annotations

import statistics
import time

import titlecat
from _measure import validation_parser, write_results  # benchmarks/ is on sys.path when run as a script
from titlecat.config import Config
from titlecat.models.ensemble import Ensemble


def main(argv: list[str] | None = None) -> None:
    ap = validation_parser(__doc__, Config.default("ensemble").model.members)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per member: train.seed + 0 ... + (N - 1)")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds: at least 2 (one seed is the ensemble as it was)")
    train_file = args.data / "spanish.train.jsonl.gz"
    offsets = range(args.seeds)
    first_seed = {m: Config.default(m).train.seed for m in args.models}  # each member config's own seed
    started = time.perf_counter()

    rows, ensembles = [], []
    for split in args.splits:
        trained: dict[tuple[str, int], titlecat.Classifier] = {}
        for model in args.models:
            seed = first_seed[model]
            for k in offsets:
                t0 = time.perf_counter()
                # no refit: it would not change a validation score (a refitted model's are its first
                # training's), only double the time
                clf = titlecat.train(train_file, model=model, tracking=False, overrides=[
                    "train.refit=false", *args.set, f"data.split_seed={split}", f"train.seed={seed + k}",
                    f"train.num_threads={args.threads}"])
                trained[model, k] = clf
                rows.append({"split": split, "model": model, "seed": seed + k,
                             "val_balanced_accuracy": clf.info.best_val_balanced_accuracy,
                             "best_epoch": clf.info.best_epoch, "seconds": time.perf_counter() - t0})
                print(f"split {split}  {model:<11}  seed {seed + k}  val bal.acc "
                      f"{rows[-1]['val_balanced_accuracy']:.4f}  ({rows[-1]['seconds']:.0f} s)", flush=True)
        choices = {f"one seed (+{k})": [(m, k) for m in args.models] for k in offsets}
        choices[f"{args.seeds} seeds"] = [(m, k) for m in args.models for k in offsets]  # expand()'s order
        for name, members in choices.items():
            score = Ensemble([trained[key] for key in members]).validate(train_file)["balanced_accuracy"]
            ensembles.append({"split": split, "members": name, "val_balanced_accuracy": score})
            print(f"split {split}  ensemble, {name}: val bal.acc {score:.4f}", flush=True)
        del trained

    minutes = (time.perf_counter() - started) / 60
    score = {(e["split"], e["members"]): e["val_balanced_accuracy"] for e in ensembles}
    names = list(dict.fromkeys(e["members"] for e in ensembles))
    one_seed = [n for n in names if n.startswith("one seed")]

    md = [f"Validation balanced accuracy (splits {', '.join(map(str, args.splits))} of {train_file.name}; "
          "the test file is not read).", "",
          "| member | " + " | ".join(f"split {s}, seed +{k}" for s in args.splits for k in offsets) + " |",
          "|---|" + "---|" * (len(args.splits) * args.seeds)]
    val = {(r["split"], r["model"], r["seed"] - first_seed[r["model"]]): r["val_balanced_accuracy"]
           for r in rows}
    for model in args.models:
        md.append(f"| {model} | " + " | ".join(f"{val[s, model, k]:.4f}" for s in args.splits for k in offsets) + " |")
    md += ["", "| ensemble of " + " + ".join(args.models) + " | "
           + " | ".join(f"split {s}" for s in args.splits) + " | mean | vs one seed (mean) |",
           "|---|" + "---|" * (len(args.splits) + 2)]
    base = statistics.mean(score[s, n] for s in args.splits for n in one_seed)
    for name in names:
        m = statistics.mean(score[s, name] for s in args.splits)
        md.append(f"| {name} | " + " | ".join(f"{score[s, name]:.4f}" for s in args.splits)
                  + f" | {m:.4f} | {m - base:+.4f} |")
    write_results(args.output, "seeds", md, minutes, len(rows), {"trainings": rows, "ensembles": ensembles})


if __name__ == "__main__":
    main()
