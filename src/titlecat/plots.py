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


def plot_loss_comparison(curves: dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]],
                         path: str | Path, title: str = "") -> Path:
    """Loss per epoch of several runs: ``{label: (train [(epoch, loss)], validation [(epoch, loss)])}``.

    One colour per run; training loss dashed, validation loss solid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for i, (label, (train, val)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        if train:
            ax.plot(*zip(*train), "--", color=color, alpha=0.7, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), "o-", color=color, markersize=3, label=f"{label} validation")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.legend(fontsize="small")
    ax.set_title(title or "loss curves")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
