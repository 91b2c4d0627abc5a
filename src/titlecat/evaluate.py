"""Scores: accuracy, balanced accuracy, loss, and the per-category report.

Balanced accuracy is the challenge metric: the mean over categories of the recall
of each category, so a rare category weighs as much as a frequent one.  A
category that appears at evaluation but never in training has index
``>= n_classes``: it can never be predicted, counts as an error, and is reported.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .batching import BatchLoader
from .featurizer import Encoded, progress


@torch.no_grad()  # (on a generator, torch turns gradients off around each step of it, not for its caller)
def batch_logits(model: torch.nn.Module, data: Encoded, batch_size: int, device: torch.device,
                 autocast: bool = False, desc: str = "predicting") -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(row indices, (B, n_classes) float32 logits on the CPU)`` of ``data``'s batches (length-
    sorted), the model in eval mode (dropout off); its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        for idx, batch in progress(BatchLoader(data, batch_size, shuffle=False), desc, len(data), batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(batch.to(device))
            yield idx, logits.float().cpu()
    finally:
        model.train(was_training)


def predict_logits(model: torch.nn.Module, data: Encoded, batch_size: int, device: torch.device,
                   autocast: bool = False) -> np.ndarray:
    """(n, n_classes) float32 logits in the order of ``data``."""
    out = None
    for idx, logits in batch_logits(model, data, batch_size, device, autocast):
        if out is None:
            out = np.empty((len(data), logits.shape[1]), dtype=np.float32)
        out[idx] = logits.numpy()
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def score_data(model: torch.nn.Module, data: Encoded, batch_size: int, device: torch.device,
               autocast: bool = False, desc: str = "validation") -> dict[str, float]:
    """``scores(data.labels, predict_logits(...))`` without holding the ``(n, n_classes)`` logits:
    each batch leaves only its predicted classes and its summed loss.  (Validating on the course's
    1.2 million validation titles would otherwise hold 3 GB of logits, and more in the loss.)"""
    labels = np.asarray(data.labels)
    pred = np.zeros(len(data), dtype=np.int64)
    loss_sum, n_known = 0.0, 0
    for idx, logits in batch_logits(model, data, batch_size, device, autocast, desc):
        y = torch.from_numpy(labels[idx])
        known = (y >= 0) & (y < logits.shape[1])
        pred[idx] = logits.argmax(1).numpy()
        if known.any():
            loss_sum += float(F.cross_entropy(logits[known], y[known], reduction="sum"))
            n_known += int(known.sum())
    return _scores(labels, pred, loss_sum / n_known if n_known else float("nan"))


def scores(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """accuracy, balanced_accuracy, loss (mean cross-entropy over rows with a known class), n."""
    labels = np.asarray(labels)
    known = (labels >= 0) & (labels < logits.shape[1])
    loss = float(F.cross_entropy(torch.from_numpy(logits[known]), torch.from_numpy(labels[known]))) if known.any() else float("nan")
    return _scores(labels, logits.argmax(1), loss)


def _scores(labels: np.ndarray, pred: np.ndarray, loss: float) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score  # here: importing sklearn.metrics costs ~1.5 s

    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "loss": loss,
        "n": int(len(labels)),
    }


def category_report(labels: np.ndarray, pred: np.ndarray, classes: list[str], unseen: list[str] | None = None) -> list[dict]:
    """One row per category: precision, recall, F1, support (unseen categories appended)."""
    from sklearn.metrics import precision_recall_fscore_support

    names = list(classes) + list(unseen or [])
    ids = np.arange(len(names))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=ids, zero_division=0)
    return [
        {"category": n, "precision": round(float(a), 4), "recall": round(float(b), 4), "f1": round(float(c), 4),
         "support": int(d), "seen_in_training": i < len(classes)}
        for i, (n, a, b, c, d) in enumerate(zip(names, p, r, f, s))
    ]


def write_report_csv(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["category"])
        w.writeheader()
        w.writerows(rows)


def write_predictions_csv(titles: list[str], categories: list[str], predicted: list[str], path: str | Path) -> None:
    """``title,category,predicted``, one row per title (what ``titlecat report`` reads confusions from)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["title", "category", "predicted"])
        w.writerows(zip(titles, categories, predicted))
