"""Copies of a title on both sides of the carved validation split: what they did to the
default MLP's validation score on the real training file, and what grouping the split by
title changes.

Two trainings of the shipped ``mlp`` config (no refit, no test file: validation only):

* ``before``: the split as it was made before the hardening issue -- stratified by category
  and language, copies of a title free to fall on both sides.  Its score is also computed
  without the validation rows whose title is a training row's, which isolates what the
  copies added;
* ``after``: the split titlecat makes now (``dataset.split_corpus``: every copy on one side).

The two splits differ in a few rows, so the two models differ by training noise as well;
the ``before`` model scored with and without its leaked rows is the clean measure of the leak.

    python benchmarks/leakage.py [--data ../shared/data/meli2019-es]   # ~6 min on 2 cores

Writes ``benchmarks/results/leakage.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import titlecat
from titlecat import dataset
from titlecat.evaluate import scores

RESULTS = Path(__file__).resolve().parent / "results"


def _train(train: Path, grouped: bool) -> dict:
    real = dataset.language_aware_split
    if not grouped:  # the old split: the same draw, without the title groups
        dataset.language_aware_split = lambda corpus, fraction, seed, groups=None: real(corpus, fraction, seed)
    try:
        clf = titlecat.train(train, model="mlp", tracking=False, overrides={"train.refit": False})
        split = dataset.split_corpus(train, None, clf.text_config, clf.config.data)
    finally:
        dataset.language_aware_split = real
    leaked = np.isin(dataset.title_keys(split.validation), dataset.title_keys(split.train))
    y, _ = dataset.encode_labels(split.validation, clf.labels)
    logits = clf.logits(split.validation)
    return {"val_balanced_accuracy": clf.info.best_val_balanced_accuracy, "n_val": len(y),
            "best_epoch": clf.info.best_epoch, "val_rows_sharing_a_training_title": int(leaked.sum()),
            "val_balanced_accuracy_without_them": scores(y[~leaked], logits[~leaked])["balanced_accuracy"],
            "accuracy_on_them": float((logits[leaked].argmax(1) == y[leaked]).mean()) if leaked.any() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/meli2019-es")
    args = ap.parse_args()
    train = args.data / "spanish.train.jsonl.gz"
    out = {"before": _train(train, grouped=False), "after": _train(train, grouped=True)}
    b, a = out["before"], out["after"]
    out["inflation_by_the_copies"] = b["val_balanced_accuracy"] - b["val_balanced_accuracy_without_them"]
    for name, r in out.items():
        print(name, r)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "leakage.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"before: {b['val_balanced_accuracy']:.4f} with {b['val_rows_sharing_a_training_title']} validation rows "
          f"whose title is a training row's ({b['val_balanced_accuracy_without_them']:.4f} without them: the copies "
          f"added {out['inflation_by_the_copies']:+.4f}); after: {a['val_balanced_accuracy']:.4f} with "
          f"{a['val_rows_sharing_a_training_title']} ({a['n_val']} validation rows)")


if __name__ == "__main__":
    main()
