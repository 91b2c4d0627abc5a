"""Loss curves as PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training and validation loss per epoch (and validation balanced accuracy on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_balanced_accuracy"] for h in history], "g^--", label="val balanced accuracy")
    ax2.set_ylabel("balanced accuracy")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax.set_title(title or "loss curves")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
