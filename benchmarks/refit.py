"""Does a refit on training + validation rows help?  Measured on rows neither model saw.

    python benchmarks/refit.py --data ../shared/data/meli2019-es [--splits 7 21]

``train.refit`` trains a config a second time, on its validation rows too, for the epochs the
first training chose on them; the refitted model can then no longer be scored on those rows.  So
this benchmark nests the question one level down: for each outer split (``--splits``, carved from
the training file as ``titlecat train`` carves its validation rows), every member of the shipped
ensemble (configs/ensemble.yaml) is trained on the outer training rows alone, as ``titlecat
train`` does (its own validation split carved from them), and then refitted on all of those rows
(``titlecat.recipe.refit``, the function ``train.refit`` calls, with the chosen epochs).  Both models,
and the ensembles of each kind, are scored on the outer validation rows, which neither learned
from.  The test file is never read: this is how the shipped configs' ``train.refit`` was chosen.
No MLflow run is written.  Writes benchmarks/results/refit.md (also printed) and refit.json.
"""

from __future__ import annotations

import gzip
import statistics
import tempfile
import time
from pathlib import Path

import titlecat
from _measure import validation_parser, write_results  # benchmarks/ is on sys.path when run as a script
from titlecat.dataset import language_aware_split
from titlecat.recipe import refit, resolve_config
from titlecat.config import Config
from titlecat.models.ensemble import Ensemble
from titlecat.cache import tokenize_file


def carve(train_file: Path, split: int, val_fraction: float, out: Path) -> tuple[Path, Path]:
    """The outer split's training and validation rows as two files (lines byte-identical)."""
    cfg = Config.default("mlp")
    corpus = tokenize_file(train_file, cfg.text, cfg.data)
    train_idx, val_idx = language_aware_split(corpus, val_fraction, split)
    with gzip.open(train_file, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) != len(corpus):
        raise SystemExit(f"{train_file}: {len(lines)} lines but {len(corpus)} rows read; blank or bad lines?")
    paths = []
    for name, idx in (("train", train_idx), ("val", val_idx)):
        path = out / f"split{split}.{name}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines[i] for i in sorted(idx)) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> None:
    ap = validation_parser(__doc__, Config.default("ensemble").model.members)
    args = ap.parse_args(argv)
    train_file = args.data / "spanish.train.jsonl.gz"
    val_fraction = Config.default("ensemble").data.val_fraction
    started = time.perf_counter()

    rows, ensembles = [], []
    with tempfile.TemporaryDirectory(prefix="titlecat-refit-") as tmp:
        for split in args.splits:
            outer_train, outer_val = carve(train_file, split, val_fraction, Path(tmp))
            kinds: dict[str, list[titlecat.Classifier]] = {"validated": [], "refitted": []}
            for model in args.models:
                cfg = resolve_config(model, None, [*args.set, "train.refit=false", f"train.num_threads={args.threads}"])
                t0 = time.perf_counter()
                first = titlecat.train(outer_train, config=cfg, tracking=False)
                seconds = time.perf_counter() - t0
                corpus = tokenize_file(outer_train, cfg.text, cfg.data)
                refitted, refit_seconds = refit(cfg, corpus, first.labels, first.info.best_epoch)
                again = titlecat.Classifier(refitted)
                for kind, clf in (("validated", first), ("refitted", again)):
                    kinds[kind].append(clf)
                    score = clf.evaluate(outer_val)["balanced_accuracy"]
                    rows.append({"split": split, "model": model, "kind": kind, "outer_val_balanced_accuracy": score,
                                 "n_train": len(corpus) if kind == "refitted" else first.info.n_train,
                                 "epochs": first.info.best_epoch,
                                 "seconds": refit_seconds if kind == "refitted" else seconds})
                    print(f"split {split}  {model:<11}  {kind:<9}  {rows[-1]['n_train']:,} rows  outer val bal.acc "
                          f"{score:.4f}  ({rows[-1]['seconds']:.0f} s)", flush=True)
            for kind, members in kinds.items():
                score = Ensemble(members).evaluate(outer_val)["balanced_accuracy"]
                ensembles.append({"split": split, "kind": kind, "outer_val_balanced_accuracy": score})
                print(f"split {split}  ensemble, {kind}: outer val bal.acc {score:.4f}", flush=True)
            del kinds

    minutes = (time.perf_counter() - started) / 60
    kinds = ("validated", "refitted")
    val = {(r["split"], r["model"], r["kind"]): r["outer_val_balanced_accuracy"] for r in rows}
    ens = {(e["split"], e["kind"]): e["outer_val_balanced_accuracy"] for e in ensembles}
    md = [f"Balanced accuracy on each outer split's validation rows (splits {', '.join(map(str, args.splits))} "
          f"of {train_file.name}, {val_fraction:g} of it; the test file is not read).  validated: trained on the "
          "outer training rows less its own validation split; refitted: then trained again on all outer "
          "training rows for the epochs chosen.", "",
          "| model | " + " | ".join(f"split {s}, {k}" for s in args.splits for k in kinds) + " | mean gain |",
          "|---|" + "---|" * (len(args.splits) * 2 + 1)]
    for model in args.models:
        gain = statistics.mean(val[s, model, "refitted"] - val[s, model, "validated"] for s in args.splits)
        md.append(f"| {model} | " + " | ".join(f"{val[s, model, k]:.4f}" for s in args.splits for k in kinds)
                  + f" | {gain:+.4f} |")
    gain = statistics.mean(ens[s, "refitted"] - ens[s, "validated"] for s in args.splits)
    md.append("| ensemble of " + " + ".join(args.models) + " | "
              + " | ".join(f"{ens[s, k]:.4f}" for s in args.splits for k in kinds) + f" | {gain:+.4f} |")
    write_results(args.output, "refit", md, minutes, len(rows), {"trainings": rows, "ensembles": ensembles})


if __name__ == "__main__":
    main()
