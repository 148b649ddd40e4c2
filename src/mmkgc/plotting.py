"""Plots for run directories (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def plot_training_curve(history: list[dict[str, Any]], path: str | Path, metric: str = "mrr",
                        name: str | None = None, selected_epoch: int | None = None,
                        test: dict[str, float] | None = None, selection: str | None = None) -> Path:
    """Training loss per epoch and the validation ``metric`` where it was measured, as a PNG: titled with the
    run's ``name``, the ``selected_epoch`` marked (dashed line and a star on its validation point), and the
    selected model's ``test`` metrics written in a box.

    :param history: records with ``epoch``, ``loss`` and optionally ``valid`` (dict of metrics).
    :param test: the selected model's test metrics; ``mrr`` and the ``hits@k`` (fractions) are shown, in order.
    :param selection: how the model was selected, for the legend (``valid_clean mrr (realistic)``).
    :returns: ``path``, written atomically.
    :raises MissingExtraError: matplotlib is not installed (``pip install "mmkgc[plots]"``).
    """
    from mmkgc.extras import require

    matplotlib = require("matplotlib", "the training-curve plot", extra="plots")
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
        chosen = [v for v in valid if v[0] == selected_epoch]
        if chosen:
            ax2.plot([chosen[0][0]], [chosen[0][1]], "*", color="tab:red", markersize=14,
                     label=f"selected: epoch {selected_epoch}" + (f" ({selection})" if selection else ""))
        ax2.legend(loc="lower right", fontsize=8)
    if selected_epoch is not None:
        ax.axvline(selected_epoch, color="tab:red", linestyle="--", linewidth=1)
    if test:
        shown = "  ".join(f"{k.upper() if k == 'mrr' else k.replace('hits@', 'H@')} {100 * v:.2f}"
                          for k, v in test.items() if k == "mrr" or k.startswith("hits@"))
        ax.text(0.02, 0.97, f"test (selected model): {shown}", transform=ax.transAxes, va="top", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.set_title(f"{name}: training curve" if name else "training curve")
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
