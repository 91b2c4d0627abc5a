"""Side-by-side comparison: every model on meli2019-es in one run.

    python benchmarks/compare.py --data ../shared/data/meli2019-es [--models mlp cnn rnn transformer tfidf]

Each model is trained with its shipped config (configs/<model>.yaml) by `titlecat.train`, in its
own subprocess (so its peak memory is its own), validated on the stratified split of the
training file, refitted on every training row where its config says `train.refit` (validation
scores stay the first training's; training time counts both), and scored once on the test file.  The TF-IDF + LinearSVC baseline runs in the
same harness and the same run, and each neural model's accuracy is reported as a ratio to it.
Then the shipped ensemble (configs/ensemble.yaml) made of the networks just trained (nothing
retrained; where it asks for more than one seed per member, the further seeds are trained too,
exactly as `titlecat train --model ensemble` would): scored on the same validation split and once
on test; its training time is all its members' together.
Then the small, fast models made from them: each network of --distill (default: the MLP) distilled
from that ensemble with its shipped student config (configs/<model>-distill.yaml, as `titlecat
distill --teacher ENSEMBLE --config ...` trains it: its training time is its own and the teacher's
scoring of its titles, not the teacher's training), and the MLP and each student quantized with the
shipped setting (`titlecat quantize`, int8: its time is its model's and the quantization's), each
scored once on test.  Every row gives its bundle's size on disk and its load seconds (`titlecat.load`,
best of 3) beside its prediction titles/s (`Classifier.predict` on the 9,480 test titles, best of 3).
Writes into benchmarks/results/:
  comparison.md          the Markdown table (also printed)
  comparison.json        the raw figures
  accuracy_vs_time.png   test balanced accuracy against training seconds
  accuracy_vs_speed.png  test balanced accuracy against prediction titles/s, marker area = bundle MB
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

from titlecat.tracking import file_lock  # the machine's shared benchmark lock (--lock)
# benchmarks/ is on sys.path when run as a script
from _measure import RESULTS, load_seconds, predict_titles_per_s, temporary_tracking

MODELS = ["mlp", "cnn", "rnn", "transformer", "tfidf"]
DISTILL = ["mlp"]  # the students distilled from the ensemble (each with configs/<model>-distill.yaml)
QUANTIZE = {"method": "int8"}  # the shipped quantization (titlecat quantize's default)


def bundle_facts(path: Path) -> dict:
    from titlecat.bundle import directory_bytes

    return {"bundle_mb": directory_bytes(path) / 1e6, "load_seconds": load_seconds(path)}


def bundle_names(model) -> list[str]:
    """The kept bundles of the ensemble ``model``'s networks (``EnsembleConfig.expand``'s order): a
    shipped model's own row's bundle for its first seed, ``model+k`` for its k-th further one."""
    return [model.members[i] if k == 0 else f"{model.members[i]}+{k}" for i, k in model.expand()]


def run_one(model: str, data: Path, keep: Path | None = None, member: int | None = None,
            teacher: Path | None = None, overrides: list[str] | None = None) -> dict:
    """Train + evaluate one model (runs inside the child process); its bundle goes to ``keep/model``.
    With ``member``, the shipped ensemble's network of that index instead (its config as
    ``titlecat train --model ensemble`` trains it), kept under its name in ``bundle_names``; with
    ``teacher``, the student ``model``-distilled (configs/<model>-distill.yaml) of that teacher."""
    import titlecat
    from titlecat.config import Config
    from titlecat.data import read_records
    from titlecat.models.ensemble import member_configs

    ens = Config.default("ensemble")
    config = None if member is None else member_configs(ens)[member]
    name = model if member is None else bundle_names(ens.model)[member]
    if teacher is not None:  # the recipe takes the shipped student config, where there is one
        config, name = None, f"{model}-distilled"
    with tempfile.TemporaryDirectory() as tmp:
        temporary_tracking(tmp, "compare")
        t = time.perf_counter()
        clf = titlecat.train(data / "spanish.train.jsonl.gz", data / "spanish.test.jsonl.gz",
                             model=model if config is None else None, config=config,
                             output=(keep or Path(tmp)) / name, experiment="compare", teacher=teacher,
                             overrides=overrides or None)
        total = time.perf_counter() - t
        facts = bundle_facts((keep or Path(tmp)) / name)
    predict_speed = predict_titles_per_s(clf, [r.title for r in read_records(data / "spanish.test.jsonl.gz")])
    info = clf.info
    hist = info.history
    return {
        "model": name,
        **({"teacher": "ensemble", "teacher_seconds": info.teacher_seconds} if teacher is not None else {}),
        **facts,
        "test_balanced_accuracy": info.test_balanced_accuracy,
        "test_accuracy": info.test_accuracy,
        "val_balanced_accuracy": info.best_val_balanced_accuracy,
        "best_epoch": info.best_epoch,
        "epochs": len(hist),
        "refit_epochs": info.refit_epochs,  # train.refit: trained again on every training row
        # a student's: its own training and the teacher's scoring of its titles
        "train_seconds": info.train_seconds + (info.teacher_seconds or 0.0),
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
    ens.save(bundles / "ensemble")  # the teacher of the students (its members copied inside)
    val = ens.validate(data / "spanish.train.jsonl.gz")
    test = ens.evaluate(data / "spanish.test.jsonl.gz")
    by_model = {r["model"]: r for r in member_rows}
    return {
        "model": "ensemble",
        **bundle_facts(bundles / "ensemble"),
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


def run_quantized(name: str, bundles: Path, data: Path, source_row: dict) -> dict:
    """The model of ``bundles/name`` quantized with the shipped setting, scored once on test (runs
    inside the child process); kept as ``bundles/name-int8``."""
    import titlecat
    from titlecat.data import read_records

    t = time.perf_counter()
    q = titlecat.load(bundles / name).quantize(**QUANTIZE)
    out = bundles / f"{name}-{QUANTIZE['method']}"
    q.save(out)
    seconds = time.perf_counter() - t
    clf = titlecat.load(out)
    test = clf.evaluate(data / "spanish.test.jsonl.gz")
    return {
        "model": out.name,
        "quantized": {**QUANTIZE, "of": name, "seconds": seconds},
        **bundle_facts(out),
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_accuracy": test["accuracy"],
        "val_balanced_accuracy": None,  # a copy of a refitted model: no validation rows it has not learned
        "best_epoch": None,
        "epochs": None,
        "train_seconds": source_row["train_seconds"] + seconds,
        "total_seconds": source_row["total_seconds"] + seconds,
        "train_titles_per_s": None,
        "predict_titles_per_s": predict_titles_per_s(clf, [r.title for r in read_records(data / "spanish.test.jsonl.gz")]),
        "parameters": clf.num_parameters(),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "history": [],
    }


LOCK: Path | None = None  # --lock: held by each child while it runs


def child(what: str, argv: list[str], stdin: str | None = None) -> dict | None:
    """Run this script in child mode (``argv``), holding ``LOCK``; its row (the JSON on its last
    line), or None after saying that ``what`` failed."""
    with file_lock(LOCK):
        proc = subprocess.run([sys.executable, __file__, *argv], input=stdin, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        print(f"{what}: failed with exit code {proc.returncode}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], base: dict | None) -> str:
    head = ("| model | test bal. acc. | vs TF-IDF | test acc. | val bal. acc. | epochs (best) | train s | "
            "train titles/s | predict titles/s | bundle MB | load s | parameters | peak MB |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines, notes = [head], []
    for r in rows:
        ratio = f"{r['test_balanced_accuracy'] / base['test_balanced_accuracy']:.3f}" if base else "n/a"
        name = r["model"]
        if r.get("members"):
            name += f" ({' + '.join(r['members'])}" + (f", {r['seeds']} seeds each)" if r.get("seeds", 1) > 1 else ")")
        if r.get("teacher"):
            name += f" (student of the {r['teacher']})"
        if r.get("quantized"):
            name += f" ({r['model'][len(r['quantized']['of']) + 1:]} copy of {r['quantized']['of']})"
        epochs = f"{r['epochs']} ({r['best_epoch']})" if r["epochs"] else "-"
        if r.get("refit_epochs"):
            epochs += f", refit {r['refit_epochs']}"
        train_speed = f"{r['train_titles_per_s']:,.0f}" if r["train_titles_per_s"] else "-"
        val = f"{r['val_balanced_accuracy']:.4f}" if r["val_balanced_accuracy"] is not None else "-"
        if r.get("teacher") and r["val_balanced_accuracy"] is not None:
            # its teacher is refitted: it learned the rows the student validates on, and taught them
            notes.append(f"{r['model']}: its validation score ({r['val_balanced_accuracy']:.4f}) is not shown: its "
                         f"teacher, refitted, learned the validation rows and passed them on.")
            val = "-"
        size = f"{r['bundle_mb']:,.1f}" if r.get("bundle_mb") is not None else "-"
        load = f"{r['load_seconds']:.2f}" if r.get("load_seconds") is not None else "-"
        lines.append(
            f"| {name} | {r['test_balanced_accuracy']:.4f} | {ratio} | {r['test_accuracy']:.4f} | "
            f"{val} | {epochs} | {r['train_seconds']:.0f} | "
            f"{train_speed} | {r['predict_titles_per_s']:,.0f} | {size} | {load} | {r['parameters']:,} | "
            f"{r['peak_memory_mb']:,.0f} |")
    return "\n".join(lines + (["", *notes] if notes else []))


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

    # what a user ships: accuracy against prediction speed, each marker's area its bundle's size
    sized = [r for r in rows if r.get("bundle_mb")]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for r in sized:
        ax.scatter(r["predict_titles_per_s"], r["test_balanced_accuracy"], s=max(8.0, r["bundle_mb"] / 2),
                   alpha=0.5, edgecolors="black")
        below = bool(r.get("quantized"))  # a quantized copy sits beside its source: its label goes under it
        ax.annotate(f"{r['model']} ({r['bundle_mb']:,.0f} MB)", (r["predict_titles_per_s"], r["test_balanced_accuracy"]),
                    textcoords="offset points", xytext=(-10, -13) if below else (6, 5), fontsize=8,
                    ha="right" if below else "left")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)  # room for the labels at the edges
    ax.set_xlabel("prediction titles/s (2-core CPU, log scale)")
    ax.set_ylabel("test balanced accuracy")
    ax.set_title("accuracy against prediction speed (marker area: bundle MB)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_speed.png")
    plt.close(fig)

    neural = [r for r in rows if len(r["history"] or []) > 1]  # the networks (not the baseline's one fit, not the ensemble)
    fig, axes = plt.subplots(1, max(1, len(neural)), figsize=(4 * max(1, len(neural)), 3.2), dpi=100, squeeze=False)
    for ax, r in zip(axes[0], neural):
        ep = [h["epoch"] for h in r["history"]]
        ax.plot(ep, [h["train_loss"] for h in r["history"]], "o-", label="train")
        ax.plot(ep, [h["val_loss"] for h in r["history"]], "s-", label="validation")
        # a student's training loss is the distillation loss (KL to the teacher mixed with cross-entropy)
        ax.set_title(r["model"] + (" (train: distillation loss)" if r.get("teacher") else ""), fontsize=9)
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
    ap.add_argument("--teacher", type=Path, help=argparse.SUPPRESS)  # child mode: --one's student of this teacher
    ap.add_argument("--quantize", help=argparse.SUPPRESS)  # child mode: the quantized copy of this kept bundle
    ap.add_argument("--no-ensemble", action="store_true", help="skip the ensemble row (and the students)")
    ap.add_argument("--distill", nargs="*", default=DISTILL, help=f"students of the ensemble (default: {DISTILL})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a further setting for every training (e.g. train.epochs=1 for a quick look, not a result)")
    ap.add_argument("--lock", type=Path, help="hold this lock file (flock) while each model trains and is measured, "
                    "not in between: the machine's shared benchmark lock")
    ap.add_argument("--out", default=RESULTS, type=Path)
    args = ap.parse_args()
    global LOCK
    LOCK = args.lock
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.keep, args.member, args.teacher, args.set)))
        return 0
    if args.quantize:
        print(json.dumps(run_quantized(args.quantize, args.keep, args.data, json.loads(sys.stdin.read()))))
        return 0
    if args.ensemble:
        print(json.dumps(run_ensemble(args.ensemble, args.data, json.loads(sys.stdin.read()))))
        return 0
    if args.table:  # the table of saved rows: a list, or comparison.json (whose plots are drawn again into --out)
        saved = json.loads(args.table.read_text())
        rows = saved["rows"] if isinstance(saved, dict) else saved
        if isinstance(saved, dict):
            plots(rows, args.out)  # and its plots again
        print(table(rows, next((r for r in rows if r["model"] == "tfidf"), None))
              + (f"\n\nWhole comparison: {saved['wall_seconds'] / 60:.1f} minutes on {os.cpu_count()} cores.\n"
                 if isinstance(saved, dict) else ""))
        return 0

    sets = [a for s in args.set for a in ("--set", s)]
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
            row = child(model, ["--one", model, "--data", str(args.data), "--keep", bundles, *sets])
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
                                             "--keep", bundles, *sets])
                    if row is None:
                        return 1
                    seeded.append(row)
            print(f"== ensemble of {', '.join(members)}", file=sys.stderr, flush=True)
            row = child("ensemble", ["--ensemble", bundles, "--data", str(args.data)], stdin=json.dumps(rows + seeded))
            if row is None:
                return 1
            rows.append(row)
            for model in args.distill:
                print(f"== {model} distilled from the ensemble", file=sys.stderr, flush=True)
                row = child(f"{model} student", ["--one", model, "--teacher", str(Path(bundles) / "ensemble"),
                                                 "--data", str(args.data), "--keep", bundles, *sets])
                if row is None:
                    return 1
                rows.append(row)
        for source in [r for r in rows if r["model"] == "mlp" or r.get("teacher")]:
            print(f"== {source['model']}, quantized ({QUANTIZE['method']})", file=sys.stderr, flush=True)
            row = child(f"{source['model']} quantized", ["--quantize", source["model"], "--keep", bundles,
                                                          "--data", str(args.data)], stdin=json.dumps(source))
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
