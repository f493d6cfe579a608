"""TensorBoard logs of both training phases: the scalars read back with TensorBoard's
event reader equal the training history, on one epoch axis across the phases, with a
confusion-matrix image per phase; and the Vertex uploader is started and stopped.

The phases run through fer_pipeline.trainer as they are, on a small generated dataset,
with a tiny stand-in for DenseNet169 (tests/test_train.py trains the real one): what
is tested here is the logging, and DenseNet would cost a minute on these CPUs.
"""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest

from fer_pipeline import synthetic, tensorboard
from fer_pipeline import trainer as train
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.split import make_split
from tests.tiny_models import tiny_model


def _dataset() -> FerDataset:
    images, labels = synthetic.make_images(8, seed=3)
    test_images, test_labels = synthetic.make_images(2, seed=4)
    n, m = len(labels), len(test_labels)
    return FerDataset(
        images=np.concatenate([images, test_images]),
        labels=np.concatenate([labels, test_labels]),
        splits=np.array(["train"] * n + ["test"] * m),
        source_splits=np.array(["Training"] * n + ["PublicTest"] * m),
        keys=np.array([f"s{i}" for i in range(n + m)]),
        manifest={"format_version": 1},
    )


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    """Two frozen epochs, then one fine-tuning epoch, into tmp directories."""
    out = tmp_path_factory.mktemp("run")
    patches = (mock.patch.object(train, "build_model", tiny_model), mock.patch.object(train, "unfreeze_backbone"))
    for patch in patches:
        patch.start()
    dataset = _dataset()
    split = make_split(dataset, SplitConfig(val_fraction=0.25, seed=1))
    cfg = TrainConfig(
        weights="none",
        batch_size=16,
        frozen_epochs=2,
        finetune_epochs=1,
        early_stopping_patience=5,
        reduce_lr_patience=1,
        run_eagerly=True,
        seed=5,
    )
    frozen = train.train_frozen(dataset, split, cfg, out / "frozen")
    tuned = train.fine_tune(frozen.model_path, dataset, split, cfg, out / "finetune")
    for patch in patches:
        patch.stop()
    return out, frozen, tuned


def _steps_and_values(points):
    return [step for step, _ in points], [value for _, value in points]


def test_scalars_equal_the_history_on_one_epoch_axis(phases):
    out, frozen, tuned = phases
    assert (frozen.epochs_run, tuned.epochs_run) == (2, 1)
    for phase_dir, result, first_step in ((out / "frozen", frozen, 0), (out / "finetune", tuned, 2)):
        runs = tensorboard.read_scalars(tensorboard.log_dir(phase_dir))
        assert set(runs) == {"train", "validation"}
        history = json.loads((phase_dir / "history.json").read_text())["history"]
        assert history == result.history
        expected_steps = [first_step + i + 1 for i in range(result.epochs_run)]
        for key, values in history.items():
            run, tag = tensorboard.scalar_destination(key)
            steps, logged = _steps_and_values(runs[run][tag])
            assert steps == expected_steps, (key, steps)
            np.testing.assert_allclose(logged, values, rtol=1e-6, err_msg=key)
        assert {"epoch_loss", "epoch_accuracy", "learning_rate"} <= set(runs["train"])
        assert {"epoch_loss", "epoch_accuracy"} <= set(runs["validation"])


def test_tensorboards_own_reader_is_used_where_installed(phases):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    out, frozen, _ = phases
    with mock.patch.object(tensorboard, "_read_run_with_tf", side_effect=AssertionError("TF fallback used")):
        runs = tensorboard.read_scalars(tensorboard.log_dir(out / "frozen"))
    assert len(runs["train"]["epoch_loss"]) == frozen.epochs_run


def test_tf_fallback_reader_agrees(phases):
    out, _, _ = phases
    directory = tensorboard.log_dir(out / "finetune")
    fallback = {run.name: tensorboard._read_run_with_tf(run) for run in directory.iterdir()}
    assert fallback == tensorboard.read_scalars(directory)


def test_each_phase_ends_with_a_confusion_matrix_image(phases):
    from tensorflow.python.summary.summary_iterator import summary_iterator

    out, frozen, tuned = phases
    for phase_dir, last_step in ((out / "frozen", 2), (out / "finetune", 3)):
        images = []
        for path in (tensorboard.log_dir(phase_dir) / "validation").glob("events.out.tfevents.*"):
            for event in summary_iterator(str(path)):
                for value in event.summary.value:
                    if value.tag == tensorboard.CONFUSION_TAG:
                        images.append((event.step, value))
        assert len(images) == 1
        step, value = images[0]
        assert step == last_step
        assert value.metadata.plugin_data.plugin_name == "images"
        # width, height, then the PNG itself
        png = value.tensor.string_val[2]
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and int(value.tensor.string_val[0]) > 100


def test_epochs_before_reads_the_previous_phase(tmp_path, phases):
    out, frozen, _ = phases
    assert tensorboard.epochs_before(frozen.model_path) == 2
    assert tensorboard.epochs_before(tmp_path / "model.keras") == 0


def test_confusion_matrix_counts():
    matrix = tensorboard.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
