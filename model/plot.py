"""Loss curve (train and validation loss against characters seen) as a PNG."""
from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: str | Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    from model.checkpoint import atomic_write

    chars = [h["chars"] / 1e6 for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(chars, [h["train_loss"] for h in history], label="train (mean over interval)")
    ax.plot(chars, [h["val_loss"] for h in history], label="validation (whole split)", marker=".")
    best = min(history, key=lambda h: h["val_loss"])
    ax.axhline(best["val_loss"], color="grey", lw=0.6, ls="--")
    ax.annotate(f"best {best['val_loss']:.4f}", (best["chars"] / 1e6, best["val_loss"]),
                textcoords="offset points", xytext=(-60, 8))
    ax.set(xlabel="characters seen (millions)", ylabel="loss (nats/char)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
