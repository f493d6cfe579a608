"""Evaluation plots, one PNG per function.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing here
needs a display or touches global pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110


def plot_history(histories: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy and loss, training and validation, of all phases on one epoch axis.

    Args:
        histories: One entry per phase, in order: a phase's history.json content
            ({"phase", "history": {...}}) or a bare Keras history dict.
        path: PNG to write.

    Returns:
        ``path``.
    """
    phases = [_phase_history(entry, i) for i, entry in enumerate(histories)]
    figure = _figure(10, 4)
    axes = figure.subplots(1, 2)
    if not any(len(h.get("loss", [])) for _, h in phases):
        for ax in axes:
            ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
    for ax, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        _plot_metric(ax, phases, metric)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    """Confusion matrix as counts and row-normalised (recall per true class), side by side.

    Args:
        matrix: Counts, rows true class, columns predicted class.
        class_names: Axis labels, in matrix order.
        path: PNG to write.

    Returns:
        ``path``.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = _figure(13, 5.5)
    axes = figure.subplots(1, 2)
    _heatmap(axes[0], counts, class_names, "Counts", lambda v: f"{int(v)}")
    _heatmap(axes[1], normalised, class_names, "Row-normalised", lambda v: f"{v:.2f}")
    return _save(figure, path)


def plot_roc_curves(curves: dict[str, dict[str, Sequence[float]]], aucs: dict[str, float | None], path: Path) -> Path:
    """One-vs-rest ROC curve per class with its AUC, and the chance diagonal.

    Args:
        curves: Class name, or "micro" for the micro-average, to {"fpr": [...], "tpr": [...]}.
        aucs: Class name to ROC-AUC (None where undefined).
        path: PNG to write.

    Returns:
        ``path``.
    """
    figure = _figure(6, 5.5)
    ax = figure.subplots()
    for name, curve in curves.items():
        auc = aucs.get(name)
        auc_text = f"AUC {auc:.3f}" if auc is not None else "AUC n/a"
        if name == "micro":  # the all-labels average, drawn apart from the class curves
            ax.plot(curve["fpr"], curve["tpr"], "k:", linewidth=2, label=f"micro-average ({auc_text})")
        else:
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.5, label=f"{name} ({auc_text})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one class vs rest")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, path)


def _phase_history(entry: dict[str, Any], position: int) -> tuple[str, dict[str, list[float]]]:
    """(phase name, Keras history) from a history.json record or a bare history."""
    if "history" in entry and isinstance(entry["history"], dict):
        return str(entry.get("phase", f"phase {position + 1}")), entry["history"]
    return f"phase {position + 1}", entry


def _plot_metric(ax, phases: list[tuple[str, dict[str, list[float]]]], metric: str) -> None:
    """Training and validation curves of all phases end to end, phase starts marked."""
    offset = 0
    for index, (name, history) in enumerate(phases):
        n = len(history.get(metric, history.get("loss", [])))
        if n == 0:
            continue
        epochs = np.arange(offset + 1, offset + n + 1)
        if index > 0 and offset > 0:
            ax.axvline(offset + 0.5, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                f"{name} starts",
                (offset + 0.5, 0.02),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                color="grey",
                ha="right",
                va="bottom",
                rotation=90,
            )
        for key, style, label in ((metric, "-", "training"), (f"val_{metric}", "--", "validation")):
            if key in history:
                ax.plot(
                    epochs, history[key], style, marker="o", markersize=3, color=f"C{index}", label=f"{label} ({name})"
                )
        offset += n
    if offset:
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, offset + 0.5)  # whole epochs, even for a single one (the locator alone gave 0.95-1.05)


def _heatmap(ax, values: np.ndarray, names: Sequence[str], title: str, fmt) -> None:
    """Annotated heatmap with class names on both axes."""
    image = ax.imshow(values, cmap="Blues")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels=list(names), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = values.max() / 2 if values.size and values.max() > 0 else 1
    for (row, col), value in np.ndenumerate(values):
        ax.text(
            col, row, fmt(value), ha="center", va="center", fontsize=8, color="white" if value > threshold else "black"
        )


def _figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas (no display, no pyplot)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure as PNG, creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
