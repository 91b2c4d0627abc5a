"""Quantization: bundle size against validation balanced accuracy, for each method and setting.

    python benchmarks/quantize.py --data ../shared/data/meli2019-es [--model DIR] [--keep 0.5 0.25 ...]
    python benchmarks/quantize.py --teacher DIR    # the same for the shipped distilled student

The default MLP is trained without its refit (``train.refit=false``) on the training rows of the
shipped validation split (split 13 of spanish.train), or ``--model DIR`` is such a bundle (e.g. an
ensemble's member trained so), or with ``--teacher DIR`` the shipped student
(configs/mlp-distill.yaml, without refit) of that teacher -- an ensemble itself trained without
refit (``python benchmarks/distill.py --make-teacher``), so that no validation row reaches the
student through it; it is then quantized with each method (``titlecat quantize``: int8,
int4, product quantization with 2, 4 and 8 values a byte, and pruning alone) keeping every row some
title can use, and with the methods of ``--methods`` keeping a share (``--keep``) of those rows, those
that carry most.  Each copy is scored on the validation rows, never on the test file (this is
how ``titlecat quantize``'s default was chosen); beside it, measured in the same run as the
unquantized model's: its size on disk, its load seconds (``titlecat.load``, best of 3) and its
prediction titles/s (``Classifier.predict`` on the validation titles ten times over, best of 3).
Writes benchmarks/results/quantize.md (also printed) and quantize.json; with ``--teacher``,
quantize-student.md and quantize-student.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import titlecat
# benchmarks/ is on sys.path when run as a script
from _measure import RESULTS, load_seconds, predict_titles_per_s
from titlecat.bundle import directory_bytes
from titlecat.config import Config
from titlecat.cache import tokenize_file
from titlecat.data import read_records
from titlecat.dataset import language_aware_split, title_keys

SETTINGS = [("none", 2), ("int8", 2), ("int4", 2), ("pq", 2), ("pq", 4), ("pq", 8)]  # (method, dsub)
SPEED_REPEAT = 10  # the validation titles predicted 10 times over per timing: ~0.7 s, steadier than one batch


def measure(name: str, path: Path, train_file: Path, titles: list[str], base: dict | None) -> dict:
    """One bundle's row: size, load seconds, validation scores, prediction speed."""
    seconds = load_seconds(path)
    clf = titlecat.load(path)
    val = clf.validate(train_file)
    row = {"setting": name, "bundle_mb": directory_bytes(path) / 1e6, "load_seconds": seconds,
           "val_balanced_accuracy": val["balanced_accuracy"], "val_accuracy": val["accuracy"],
           "predict_titles_per_s": predict_titles_per_s(clf, titles * SPEED_REPEAT),
           "rows": json.loads((path / "bundle.json").read_text()).get("quantization", {}).get("rows")}
    if base is not None:
        row["delta"] = row["val_balanced_accuracy"] - base["val_balanced_accuracy"]
    print(f"{name}: {row['bundle_mb']:.1f} MB, val bal. acc. {row['val_balanced_accuracy']:.4f}, "
          f"load {seconds:.2f} s, {row['predict_titles_per_s']:,.0f} titles/s", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/meli2019-es"))
    ap.add_argument("--model", type=Path, help="an MLP bundle trained without refit on the shipped split")
    ap.add_argument("--teacher", type=Path, help="train the shipped student of this teacher (an ensemble trained "
                    "without refit) instead of the MLP")
    ap.add_argument("--keep", type=float, nargs="*", default=[0.5, 0.25], help="shares of the useful rows kept")
    ap.add_argument("--methods", nargs="*", default=["int8", "int4"], help="methods tried with --keep")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.model is not None and args.teacher is not None:
        ap.error("--model is a bundle to quantize, --teacher trains one: give one of them")
    train_file = args.data / "spanish.train.jsonl.gz"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="titlecat-quantize-") as tmp:
        tmp = Path(tmp)
        source = args.model
        if source is None:
            source = tmp / "mlp"
            # with a teacher, the recipe takes the shipped student config (configs/mlp-distill.yaml)
            titlecat.train(train_file, model="mlp", overrides={"train.refit": False}, output=source, tracking=False,
                           teacher=args.teacher)
        clf = titlecat.load(source)
        if clf.info.refitted or clf.held_out is not None:
            raise SystemExit(f"{source}: refitted on its validation rows; give a model trained with train.refit=false")
        corpus = tokenize_file(train_file, clf.text_config, clf.config.data)
        # the model's own validation rows (copies of a title on one side, as titlecat.train splits)
        _, val_idx = language_aware_split(corpus, clf.config.data.val_fraction, clf.config.data.split_seed,
                                          title_keys(corpus))
        titles = [r.title for r in read_records(train_file)]
        val_titles = [titles[i] for i in val_idx]
        base = measure("unquantized", source, train_file, val_titles, None)
        rows = [base]
        useful = None
        tried = [(m, d, 0) for m, d in SETTINGS]
        for method, dsub, keep in tried:
            name = method if method != "pq" else f"pq, dsub {dsub}"
            t = time.perf_counter()
            q = clf.quantize(method, keep=keep, dsub=dsub)
            quantize_seconds = time.perf_counter() - t
            path = tmp / f"q-{method}-{dsub}-{keep}"
            q.save(path)
            row = measure(name + ("" if keep == 0 else f", keep {keep:,} rows"), path, train_file, val_titles, base)
            row.update(method=method, dsub=dsub, keep=keep, quantize_seconds=quantize_seconds)
            rows.append(row)
            if useful is None:
                useful = sum(row["rows"].values())  # every row some title can use
                tried += [(m, 2, int(useful * share)) for share in args.keep for m in args.methods]
            shutil.rmtree(path)
    minutes = (time.perf_counter() - started) / 60
    what = ("The default MLP" if args.teacher is None else f"The shipped student (configs/mlp-distill.yaml) of "
            f"{args.teacher.name} (an ensemble trained without refit)")
    if args.model is not None:
        what = f"{args.model.name}, a model"
    lines = [
        f"{what} trained without refit on split {clf.config.data.split_seed} of {train_file.name}, "
        f"quantized; balanced accuracy on its {len(val_titles):,} validation titles (the test file is not read). "
        f"Rows some title can use: {useful:,} of {sum(clf.model.featurizer.sizes().values()):,}.",
        "",
        "| setting | bundle MB | val bal. acc. | vs unquantized | load s | predict titles/s | embedding rows kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kept = "all" if r["rows"] is None else f"{sum(r['rows'].values()):,}"
        delta = f"{r['delta']:+.4f}" if "delta" in r else "-"
        lines.append(f"| {r['setting']} | {r['bundle_mb']:.1f} | {r['val_balanced_accuracy']:.4f} | {delta} | "
                     f"{r['load_seconds']:.2f} | {r['predict_titles_per_s']:,.0f} | {kept} |")
    text = "\n".join([*lines, "", f"{minutes:.1f} minutes on this machine."]) + "\n"
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = "quantize" if args.teacher is None else "quantize-student"
    (args.output / f"{stem}.md").write_text(text)
    (args.output / f"{stem}.json").write_text(json.dumps({"rows": rows, "useful_rows": useful, "minutes": minutes,
                                                           "config": Config.default("mlp").flat()}, indent=2))


if __name__ == "__main__":
    main()
