"""Plots for run directories (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def plot_training_curve(history: list[dict[str, Any]], path: str | Path, metric: str = "mrr") -> Path:
    """Training loss per epoch and the validation ``metric`` where it was measured, as a PNG.

    :param history: records with ``epoch``, ``loss`` and optionally ``valid`` (dict of metrics).
    :returns: ``path``, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    valid = [(h["epoch"], h["valid"][metric]) for h in history if "valid" in h and metric in h["valid"]]
    if valid:
        ax2 = ax.twinx()
        ax2.plot([v[0] for v in valid], [v[1] for v in valid], "o-", color="tab:orange", label=f"valid {metric}")
        ax2.set_ylabel(f"validation {metric}", color="tab:orange")
    ax.set_title("training curve")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file in the same directory, then rename) and close it.

    :returns: ``path``.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
