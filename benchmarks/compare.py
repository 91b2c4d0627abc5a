"""Side-by-side comparison: every model on meli2019-es in one run.

    python benchmarks/compare.py --data ../shared/data/meli2019-es [--models mlp cnn rnn transformer tfidf]

Each model is trained with its shipped config (configs/<model>.yaml) by `titlecat.train`, in its
own subprocess (so its peak memory is its own), validated on the stratified split of the
training file, refitted on every training row where its config says `train.refit` (validation
scores stay the first training's; training time counts both), and scored once on the test file.  The TF-IDF + LinearSVC baseline runs in the
same harness and the same run, and each neural model's accuracy is reported as a ratio to it.
The last row is the shipped ensemble (configs/ensemble.yaml) made of the networks just trained
(nothing retrained; where it asks for more than one seed per member, the further seeds are
trained too, exactly as `titlecat train --model ensemble` would): scored on the same validation
split and once on test; its training time is all its members' together.
Writes into benchmarks/results/:
  comparison.md          the Markdown table (also printed)
  comparison.json        the raw figures
  accuracy_vs_time.png   test balanced accuracy against training seconds
  loss_curves.png        training and validation loss per epoch of each neural model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import RESULTS, predict_titles_per_s, temporary_tracking  # benchmarks/ is on sys.path when run as a script

MODELS = ["mlp", "cnn", "rnn", "transformer", "tfidf"]


def bundle_names(model) -> list[str]:
    """The kept bundles of the ensemble ``model``'s networks (``EnsembleConfig.expand``'s order): a
    shipped model's own row's bundle for its first seed, ``model+k`` for its k-th further one."""
    return [model.members[i] if k == 0 else f"{model.members[i]}+{k}" for i, k in model.expand()]


def run_one(model: str, data: Path, keep: Path | None = None, member: int | None = None) -> dict:
    """Train + evaluate one model (runs inside the child process); its bundle goes to ``keep/model``.
    With ``member``, the shipped ensemble's network of that index instead (its config as
    ``titlecat train --model ensemble`` trains it), kept under its name in ``bundle_names``."""
    import titlecat
    from titlecat.config import Config
    from titlecat.data import read_records
    from titlecat.models.ensemble import member_configs

    ens = Config.default("ensemble")
    config = None if member is None else member_configs(ens)[member]
    name = model if member is None else bundle_names(ens.model)[member]
    with tempfile.TemporaryDirectory() as tmp:
        temporary_tracking(tmp, "compare")
        t = time.perf_counter()
        clf = titlecat.train(data / "spanish.train.jsonl.gz", data / "spanish.test.jsonl.gz",
                             model=model if config is None else None, config=config,
                             output=(keep or Path(tmp)) / name, experiment="compare")
        total = time.perf_counter() - t
    predict_speed = predict_titles_per_s(clf, [r.title for r in read_records(data / "spanish.test.jsonl.gz")])
    info = clf.info
    hist = info.history
    return {
        "model": name,
        "test_balanced_accuracy": info.test_balanced_accuracy,
        "test_accuracy": info.test_accuracy,
        "val_balanced_accuracy": info.best_val_balanced_accuracy,
        "best_epoch": info.best_epoch,
        "epochs": len(hist),
        "refit_epochs": info.refit_epochs,  # train.refit: trained again on every training row
        "train_seconds": info.train_seconds,
        "total_seconds": total,
        "train_titles_per_s": sorted(h["samples_per_second"] for h in hist)[len(hist) // 2],
        "predict_titles_per_s": predict_speed,
        "parameters": info.parameters,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "history": [{k: h[k] for k in ("epoch", "train_loss", "val_loss", "val_balanced_accuracy")} for h in hist],
    }


def run_ensemble(bundles: Path, data: Path, member_rows: list[dict]) -> dict:
    """The shipped ensemble of the bundles just trained (runs inside the child process)."""
    import titlecat
    from titlecat.config import Config
    from titlecat.data import read_records

    cfg = Config.default("ensemble")
    names = bundle_names(cfg.model)
    ens = titlecat.Ensemble([titlecat.load(bundles / n) for n in names], cfg.model.member_weights(), cfg)
    val = ens.validate(data / "spanish.train.jsonl.gz")
    test = ens.evaluate(data / "spanish.test.jsonl.gz")
    by_model = {r["model"]: r for r in member_rows}
    return {
        "model": "ensemble",
        "members": cfg.model.members,
        "seeds": cfg.model.seeds,
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_accuracy": test["accuracy"],
        "val_balanced_accuracy": val["balanced_accuracy"],
        "best_epoch": None,
        "epochs": None,
        "train_seconds": sum(by_model[n]["train_seconds"] for n in names),
        "total_seconds": sum(by_model[n]["total_seconds"] for n in names),
        "train_titles_per_s": None,
        "predict_titles_per_s": predict_titles_per_s(ens, [r.title for r in read_records(data / "spanish.test.jsonl.gz")]),
        "parameters": ens.num_parameters(),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "history": [],
    }


def child(what: str, argv: list[str], stdin: str | None = None) -> dict | None:
    """Run this script in child mode (``argv``); its row (the JSON on its last line), or None
    after saying that ``what`` failed."""
    proc = subprocess.run([sys.executable, __file__, *argv], input=stdin, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        print(f"{what}: failed with exit code {proc.returncode}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], base: dict | None) -> str:
    head = ("| model | test bal. acc. | vs TF-IDF | test acc. | val bal. acc. | epochs (best) | train s | "
            "train titles/s | predict titles/s | parameters | peak MB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        ratio = f"{r['test_balanced_accuracy'] / base['test_balanced_accuracy']:.3f}" if base else "n/a"
        name = r["model"]
        if r.get("members"):
            name += f" ({' + '.join(r['members'])}" + (f", {r['seeds']} seeds each)" if r.get("seeds", 1) > 1 else ")")
        epochs = f"{r['epochs']} ({r['best_epoch']})" if r["epochs"] else "-"
        if r.get("refit_epochs"):
            epochs += f", refit {r['refit_epochs']}"
        train_speed = f"{r['train_titles_per_s']:,.0f}" if r["train_titles_per_s"] else "-"
        lines.append(
            f"| {name} | {r['test_balanced_accuracy']:.4f} | {ratio} | {r['test_accuracy']:.4f} | "
            f"{r['val_balanced_accuracy']:.4f} | {epochs} | {r['train_seconds']:.0f} | "
            f"{train_speed} | {r['predict_titles_per_s']:,.0f} | {r['parameters']:,} | "
            f"{r['peak_memory_mb']:,.0f} |")
    return "\n".join(lines)


def plots(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in rows:
        ax.scatter(r["train_seconds"], r["test_balanced_accuracy"], s=40)
        ax.annotate(r["model"], (r["train_seconds"], r["test_balanced_accuracy"]), textcoords="offset points",
                    xytext=(5, 5))
    ax.set_xlabel("training seconds (2-core CPU)")
    ax.set_ylabel("test balanced accuracy")
    ax.set_title("accuracy against training time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_time.png")
    plt.close(fig)

    neural = [r for r in rows if r["history"]]  # the networks (not the baseline, not the ensemble)
    fig, axes = plt.subplots(1, max(1, len(neural)), figsize=(4 * max(1, len(neural)), 3.2), dpi=100, squeeze=False)
    for ax, r in zip(axes[0], neural):
        ep = [h["epoch"] for h in r["history"]]
        ax.plot(ep, [h["train_loss"] for h in r["history"]], "o-", label="train")
        ax.plot(ep, [h["val_loss"] for h in r["history"]], "s-", label="validation")
        ax.set_title(r["model"])
        ax.set_xlabel("epoch")
        ax.legend()
    axes[0][0].set_ylabel("cross-entropy")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/meli2019-es", type=Path)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one model, JSON on the last line
    ap.add_argument("--member", type=int, help=argparse.SUPPRESS)  # child mode: the ensemble's network of this index
    ap.add_argument("--keep", type=Path, help=argparse.SUPPRESS)  # child mode: keep the bundle in this directory
    ap.add_argument("--ensemble", type=Path, help=argparse.SUPPRESS)  # child mode: the ensemble of the bundles there
    ap.add_argument("--table", type=Path, help=argparse.SUPPRESS)  # child mode: the table of the rows in this JSON
    ap.add_argument("--no-ensemble", action="store_true", help="skip the ensemble row")
    ap.add_argument("--out", default=RESULTS, type=Path)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.keep, args.member)))
        return 0
    if args.ensemble:
        print(json.dumps(run_ensemble(args.ensemble, args.data, json.loads(sys.stdin.read()))))
        return 0
    if args.table:
        rows = json.loads(args.table.read_text())
        print(table(rows, next((r for r in rows if r["model"] == "tfidf"), None)))
        return 0

    os.environ.setdefault("TITLECAT_CACHE", tempfile.mkdtemp(prefix="titlecat-compare-cache-"))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    from titlecat.config import Config

    ens_model = Config.default("ensemble").model
    members = ens_model.members
    ensemble = not args.no_ensemble and set(members) <= set(args.models)
    seeded = []  # rows of the ensemble's further seeds
    with tempfile.TemporaryDirectory(prefix="titlecat-compare-bundles-") as bundles:
        for model in args.models:
            print(f"== {model}", file=sys.stderr, flush=True)
            keep = ["--keep", bundles] if ensemble and model in members else []
            row = child(model, ["--one", model, "--data", str(args.data), *keep])
            if row is None:
                return 1
            rows.append(row)
        if ensemble:
            # the ensemble's further seeds: trained for it alone (not rows of the table)
            for j, (i, k) in enumerate(ens_model.expand()):
                if k > 0:
                    print(f"== ensemble member {j + 1}/{len(ens_model.expand())}: {members[i]}, seed +{k}",
                          file=sys.stderr, flush=True)
                    row = child(members[i], ["--one", members[i], "--member", str(j), "--data", str(args.data),
                                             "--keep", bundles])
                    if row is None:
                        return 1
                    seeded.append(row)
            print(f"== ensemble of {', '.join(members)}", file=sys.stderr, flush=True)
            row = child("ensemble", ["--ensemble", bundles, "--data", str(args.data)], stdin=json.dumps(rows + seeded))
            if row is None:
                return 1
            rows.append(row)
    wall = time.perf_counter() - start
    base = next((r for r in rows if r["model"] == "tfidf"), None)
    md = table(rows, base) + f"\n\nWhole comparison: {wall / 60:.1f} minutes on {os.cpu_count()} cores.\n"
    print(md)
    (args.out / "comparison.md").write_text(md)
    (args.out / "comparison.json").write_text(
        json.dumps({"wall_seconds": wall, "rows": rows, "ensemble_further_seeds": seeded}, indent=2) + "\n")
    plots(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
