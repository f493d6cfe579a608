"""Small helpers that the KFP component bodies call, so that those bodies stay a few
lines long. Nothing here imports KFP: artifacts come in as paths, and output
artifact objects are used only through their ``log_*`` methods (duck-typed)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from fer_pipeline.classes import CLASSES
from fer_pipeline.config import TrainConfig
from fer_pipeline.files import MODEL_FILE
from fer_pipeline.recipe import resolve

ROC_POINTS = 200  # ClassificationMetrics curves stay small for the Vertex console


def setup_logging() -> None:
    """One line per event, with the step's logger name, on stderr (shown by Vertex and kfp.local)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)


def phase_config(preset: str, recipe: dict, model_dir: str | Path) -> TrainConfig:
    """A training component's config: the run's recipe, resolved as every step resolves
    it, with its phase backup beside the output model (so a retried task resumes)."""
    return dataclasses.replace(resolve(preset, recipe).train, backup_dir=f"{model_dir}-backup")


def model_file(model_dir: str | Path) -> Path:
    """The Keras file inside a Model artifact directory."""
    return Path(model_dir) / MODEL_FILE


def dataset_metadata(outcome) -> dict[str, Any]:
    """What the Dataset artifact shows in the console: where, checksum, counts."""
    manifest = outcome.manifest
    counts = manifest.get("counts", {})
    return {
        "uri": outcome.uri,
        "source_sha256": manifest.get("source_sha256", ""),
        "num_samples": manifest.get("num_samples", 0),
        "train": sum(counts.get("train", {}).values()),
        "test": sum(counts.get("test", {}).values()),
        "uploaded_files": outcome.uploaded_files,
        "reused": outcome.reused,
        "counts": counts,
    }


def phase_outputs(result, model, history_path: str | Path, metrics) -> None:
    """Copy a phase's history to its artifact, log its summary metrics, and show the
    resolved recipe as the model artifact's metadata (the console's artifact panel)."""
    history_file = Path(model.path) / "history.json"
    shutil.copyfile(history_file, history_path)
    config = json.loads(history_file.read_text()).get("config") or {}
    model.metadata.update({f"recipe.{k}": v for k, v in config.items() if k != "backup_dir"})
    history = result.history
    metrics.log_metric("epochs_run", result.epochs_run)
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("seconds", round(result.seconds, 1))
    for key in ("val_loss", "val_accuracy"):
        if history.get(key):
            metrics.log_metric(f"best_{key}", round(float(history[key][result.best_epoch - 1]), 4))
    if result.averaged:  # the model holds the mean of these epochs, not the best one's weights
        first, last = result.averaged["epochs"]
        metrics.log_metric("averaged_first_epoch", first)
        metrics.log_metric("averaged_last_epoch", last)
        for key in ("val_loss", "val_accuracy"):
            metrics.log_metric(f"averaged_{key}", result.averaged[key])


def _thin(values: list[float], limit: int) -> list[float]:
    """Keep at most ``limit`` evenly spaced points, first and last included."""
    if len(values) <= limit:
        return list(values)
    step = (len(values) - 1) / (limit - 1)
    return [values[round(i * step)] for i in range(limit)]


def evaluation_outputs(
    result: dict, evaluation_dir: str | Path, report_path: str | Path, metrics, classification
) -> None:
    """Scalars to Metrics, confusion matrix and ROC to ClassificationMetrics, report to HTML."""
    shutil.copyfile(Path(evaluation_dir) / "report.html", report_path)
    for key in (
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "macro_roc_auc",
        "public_test_accuracy",
        "private_test_accuracy",
    ):
        if result.get(key) is not None:
            metrics.log_metric(key, round(float(result[key]), 4))
    for name, row in result.get("per_class", {}).items():
        if row.get("f1") is not None:  # None: the class is in neither the test labels nor the predictions
            metrics.log_metric(f"f1_{name}", round(float(row["f1"]), 4))
    classification.log_confusion_matrix(list(CLASSES), [[int(v) for v in row] for row in result["confusion_matrix"]])
    curve = result.get("roc_curves", {}).get("micro")
    if curve:
        fpr, tpr, thresholds = (_thin(curve[k], ROC_POINTS) for k in ("fpr", "tpr", "thresholds"))
        # sklearn's first threshold is +inf, which JSON (and the console) cannot show
        thresholds = [min(float(t), 1.0) for t in thresholds]
        classification.log_roc_curve(fpr, tpr, thresholds)


_LABEL_VALUE = re.compile(r"[^a-z0-9_-]")


def registration_labels(dataset_metadata: dict, commit: str) -> dict[str, str]:
    """Registry labels: dataset checksum and source commit, in Vertex's label alphabet."""
    raw = {"dataset_sha256": str(dataset_metadata.get("source_sha256", ""))[:16], "commit": commit}
    return {k: _LABEL_VALUE.sub("-", v.lower())[:63] for k, v in raw.items() if v}
