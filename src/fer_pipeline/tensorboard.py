"""TensorBoard logs of both training phases, and their live upload to a Vertex AI TensorBoard.

Each phase writes event files under its output directory (the Model artifact in a
pipeline run, ``OUT/frozen`` and ``OUT/finetune`` for ``fer-pipeline run``)::

    <phase dir>/tensorboard/train/        epoch_loss, epoch_accuracy, learning_rate
    <phase dir>/tensorboard/validation/   epoch_loss, epoch_accuracy,
                                          confusion_matrix (image, at the phase's end)

Steps are epochs counted across both phases: fine-tuning continues at the step after
the last frozen-phase epoch, so TensorBoard draws both phases on one axis. The values
are the ones Keras puts in the history (``history.json``), written at each epoch's end,
so the curves grow while a phase runs. ``make tensorboard`` serves them locally.

On Vertex AI, ``fer_pipeline.cloud.experiments.vertex_upload`` streams a phase's logs
to a Vertex AI TensorBoard instance while it trains (pipeline parameter ``tensorboard``;
``TENSORBOARD`` in config/submit.env, created by Terraform with ``create_tensorboard = true``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:  # for annotations only: TensorFlow is imported where the logs are written
    import tensorflow as tf

log = logging.getLogger(__name__)

LOG_DIR = "tensorboard"  # inside a phase's output directory
TRAIN_RUN = "train"
VALIDATION_RUN = "validation"
LEARNING_RATE_TAG = "learning_rate"
CONFUSION_TAG = "confusion_matrix"


def log_dir(phase_dir: str | Path) -> Path:
    """The TensorBoard directory of one phase's output directory."""
    return Path(phase_dir) / LOG_DIR


def scalar_destination(key: str) -> tuple[str, str]:
    """(run, tag) for one Keras history key: ``val_loss`` -> (validation, epoch_loss)."""
    if key == LEARNING_RATE_TAG:
        return TRAIN_RUN, LEARNING_RATE_TAG
    if key.startswith("val_"):
        return VALIDATION_RUN, f"epoch_{key[len('val_') :]}"
    return TRAIN_RUN, f"epoch_{key}"


def epochs_before(model_path: str | Path) -> int:
    """Epochs the phase that wrote ``model_path`` ran (its ``history.json`` beside it); 0 if unknown.

    Fine-tuning starts its TensorBoard steps after these, so both phases share one axis.
    """
    history = Path(model_path).parent / "history.json"
    try:
        record = json.loads(history.read_text())
    except (OSError, ValueError):
        return 0
    return int(record.get("epochs_run", 0) or 0)


class EpochSummaries(keras.callbacks.Callback):
    """(TensorFlow backend only: TensorFlow is imported where it writes, so that the
    trainer can import this module's helpers on any backend.) Writes every history value at each epoch's end, and a validation confusion matrix at the end.

    Put it after the callback that adds ``learning_rate`` to the epoch logs.

    Args:
        directory: The phase's TensorBoard directory (``log_dir(phase_dir)``).
        phase: Phase name, shown in the confusion matrix's description.
        first_step: Epochs run before this phase; this phase's first epoch is step
            ``first_step + 1``.
        validation: The validation dataset (``(images, labels[, weights])`` batches,
            unshuffled) for the confusion matrix; None skips it.
    """

    def __init__(self, directory: str | Path, *, phase: str, first_step: int = 0, validation=None):
        super().__init__()
        self.directory = Path(directory)
        self.phase = phase
        self.first_step = int(first_step)
        self.validation = validation
        self.last_step = self.first_step
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        import tensorflow as tf

        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(str(self.directory / run))
        return self._writers[run]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        self.last_step = self.first_step + epoch + 1
        for key, value in (logs or {}).items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            run, tag = scalar_destination(key)
            with self._writer(run).as_default():
                tf.summary.scalar(tag, number, step=self.last_step)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        try:
            if self.validation is not None and self.last_step > self.first_step:
                self._write_confusion_matrix()
        except Exception:  # a missing picture must never fail a training run
            log.warning("Could not write the %s confusion matrix to TensorBoard.", self.phase, exc_info=True)
        finally:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    def _write_confusion_matrix(self) -> None:
        import tensorflow as tf

        from fer_pipeline.classes import CLASSES

        labels, predicted = [], []
        for batch in self.validation:
            images, batch_labels = batch[0], batch[1]
            scores = keras.ops.convert_to_numpy(self.model(images, training=False))
            predicted.append(scores.argmax(axis=1))
            labels.append(np.asarray(batch_labels))
        matrix = confusion_matrix(np.concatenate(labels), np.concatenate(predicted), len(CLASSES))
        png = confusion_png(matrix, CLASSES)
        with self._writer(VALIDATION_RUN).as_default():
            tf.summary.image(
                CONFUSION_TAG,
                tf.expand_dims(tf.io.decode_png(png, channels=3), 0),
                step=self.last_step,
                description=f"Validation confusion matrix at the end of phase {self.phase} (counts, row-normalised)",
            )


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows true class, columns predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def confusion_png(matrix: np.ndarray, class_names) -> bytes:
    """The report's confusion-matrix figure (counts and row-normalised) as PNG bytes."""
    from fer_pipeline.plots import plot_confusion_matrix

    with tempfile.TemporaryDirectory(prefix="fer-tb-") as tmp:
        return plot_confusion_matrix(matrix.tolist(), list(class_names), Path(tmp) / "cm.png").read_bytes()


def read_scalars(directory: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run: {tag: [(step, value), ...]}}`` of the event files under ``directory``.

    Uses TensorBoard's own event reader (``EventAccumulator``) where the tensorboard
    package is installed, else TensorFlow's ``summary_iterator``.
    """
    directory = Path(directory)
    runs: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        runs[run_dir.name] = _read_run(run_dir)
    return runs


def _read_run(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    import tensorflow as tf

    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return _read_run_with_tf(run_dir)
    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, float(tf.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]
        for tag in accumulator.Tags().get("tensors", [])
        if _is_scalar(accumulator, tag)
    }


def _is_scalar(accumulator, tag: str) -> bool:
    metadata = accumulator.SummaryMetadata(tag)
    return metadata.plugin_data.plugin_name == "scalars"


def _read_run_with_tf(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    import tensorflow as tf
    from tensorflow.python.summary.summary_iterator import summary_iterator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars
