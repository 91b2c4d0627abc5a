"""Does token dropout help?  Each network trained with and without it, scored on validation only.

    python benchmarks/token_dropout.py --data ../shared/data/meli2019-es [--splits 7 21] [--rates 0 0.1]

Every network (configs/<model>.yaml) is trained at each ``train.token_dropout`` rate on each
validation split (``data.split_seed``) carved from the training file; the shipped configs' own
split (13) is left out by default because the MLP was tuned on it.  The test file is never read:
this is how the shipped rates were chosen.  Then, per split, the ensemble of the four networks
(equal weights, as configs/ensemble.yaml) is scored on the same validation rows with every member
at one rate, and with every member at the rate its shipped config sets.  No MLflow run is written.
Writes benchmarks/results/token_dropout.md (also printed) and token_dropout.json.
"""

from __future__ import annotations

import time

import titlecat
from _measure import validation_parser, write_results  # benchmarks/ is on sys.path when run as a script
from titlecat.config import Config
from titlecat.models.ensemble import Ensemble
MODELS = ["mlp", "cnn", "rnn", "transformer"]


def main(argv: list[str] | None = None) -> None:
    ap = validation_parser(__doc__, MODELS)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1])
    args = ap.parse_args(argv)
    train_file = args.data / "spanish.train.jsonl.gz"
    shipped = {m: Config.default(m).train.token_dropout for m in args.models}
    started = time.perf_counter()

    rows, ensembles = [], []
    for split in args.splits:
        trained: dict[tuple[str, float], titlecat.Classifier] = {}
        for model in args.models:
            for rate in args.rates:
                t0 = time.perf_counter()
                # no refit: it would not change a validation score (a refitted model's are its first
                # training's), only double the time
                clf = titlecat.train(train_file, model=model, tracking=False, overrides=[
                    "train.refit=false", *args.set, f"data.split_seed={split}", f"train.token_dropout={rate}",
                    f"train.num_threads={args.threads}"])
                trained[model, rate] = clf
                rows.append({"split": split, "model": model, "rate": rate,
                             "val_balanced_accuracy": clf.info.best_val_balanced_accuracy,
                             "best_epoch": clf.info.best_epoch, "seconds": time.perf_counter() - t0})
                print(f"split {split}  {model:<11}  token_dropout {rate:g}  val bal.acc "
                      f"{rows[-1]['val_balanced_accuracy']:.4f}  ({rows[-1]['seconds']:.0f} s)", flush=True)
        if len(args.models) > 1:
            choices = {f"all at {r:g}": {m: r for m in args.models} for r in args.rates}
            if all(shipped[m] in args.rates for m in args.models):
                choices["shipped rates"] = shipped
            for name, rates in choices.items():
                ens = Ensemble([trained[m, rates[m]] for m in args.models])
                score = ens.validate(train_file)["balanced_accuracy"]
                ensembles.append({"split": split, "members": name, "rates": rates, "val_balanced_accuracy": score})
                print(f"split {split}  ensemble, {name}: val bal.acc {score:.4f}", flush=True)
        del trained

    minutes = (time.perf_counter() - started) / 60
    md = [f"Validation balanced accuracy (splits {', '.join(map(str, args.splits))} of {train_file.name}; "
          "the test file is not read).", "",
          "| model | " + " | ".join(f"split {s}, rate {r:g}" for s in args.splits for r in args.rates)
          + " | mean change vs rate " + f"{args.rates[0]:g} |",
          "|---|" + "---|" * (len(args.splits) * len(args.rates) + 1)]
    score = {(r["split"], r["model"], r["rate"]): r["val_balanced_accuracy"] for r in rows}
    score.update({(e["split"], "ensemble", e["members"]): e["val_balanced_accuracy"] for e in ensembles})

    def change(model: str, key) -> str:
        base = [score[s, model, key[0]] for s in args.splits]
        return " / ".join(f"{sum(score[s, model, k] for s in args.splits) / len(args.splits) - sum(base) / len(base):+.4f}"
                          for k in key[1:])

    for model in args.models:
        md.append(f"| {model} (shipped rate {shipped[model]:g}) | "
                  + " | ".join(f"{score[s, model, r]:.4f}" for s in args.splits for r in args.rates)
                  + f" | {change(model, args.rates)} |")
    names = list(dict.fromkeys(e["members"] for e in ensembles))
    if names:
        md += ["", "| ensemble of " + " + ".join(args.models) + " | " + " | ".join(f"split {s}" for s in args.splits)
               + f" | mean change vs {names[0]} |", "|---|" + "---|" * (len(args.splits) + 1)]
        for name in names:
            md.append(f"| members {name} | " + " | ".join(f"{score[s, 'ensemble', name]:.4f}" for s in args.splits)
                      + f" | {change('ensemble', [names[0], name])} |")
    write_results(args.output, "token_dropout", md, minutes, len(rows), {"trainings": rows, "ensembles": ensembles})


if __name__ == "__main__":
    main()
