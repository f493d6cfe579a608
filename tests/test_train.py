"""Both training phases end to end on generated data, and the data they train on.

Fits run eagerly (``run_eagerly=True``): tracing DenseNet169 into a graph costs about
30 s per phase on these CPUs, more than the one small epoch itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_pipeline import feed_tf, synthetic, training_data
from fer_pipeline import trainer as train
from fer_pipeline.classes import NUM_CLASSES
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import ConfigError
from fer_pipeline.model import BACKBONE_NAME
from fer_pipeline.split import make_split
from fer_pipeline.tf_data import make_dataset

HISTORY_KEYS = {"phase", "history", "epochs_run", "best_epoch", "seconds", "config", "train_samples", "val_samples"}
EPOCH_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
LAST_BLOCK = "conv5_block32_0_bn"  # fine-tune only the last dense layer: a small backward graph


def _dataset(train_per_class: list[int], n_test: int = 4, seed: int = 0) -> FerDataset:
    """Generated train images (``train_per_class[k]`` of class k) and ``n_test`` test images per class."""
    images, labels = synthetic.make_images(max(train_per_class), seed=seed)
    keep = np.concatenate([np.flatnonzero(labels == k)[:n] for k, n in enumerate(train_per_class)])
    test_images, test_labels = synthetic.make_images(n_test, seed=seed + 1)
    n_train, n_test_total = len(keep), len(test_labels)
    return FerDataset(
        images=np.concatenate([images[keep], test_images]),
        labels=np.concatenate([labels[keep], test_labels]),
        splits=np.array(["train"] * n_train + ["test"] * n_test_total),
        source_splits=np.array(["Training"] * n_train + ["PublicTest", "PrivateTest"] * (n_test_total // 2)),
        keys=np.array([f"sample_{i}" for i in range(n_train + n_test_total)]),
        manifest={"format_version": 1},
    )


def _cfg(**overrides) -> TrainConfig:
    values = dict(
        weights="none",
        image_size=48,
        dense_units=(16,),
        dropouts=(0.2,),
        batch_size=16,
        frozen_epochs=1,
        finetune_epochs=1,
        unfreeze_from=LAST_BLOCK,
        run_eagerly=True,
        seed=7,
    )
    values.update(overrides)
    return TrainConfig(**values)


IMBALANCED = [40, 4, 20, 60, 30, 25, 10]


def test_max_train_samples_caps_train_and_val_keeping_every_class():
    dataset = _dataset(IMBALANCED)
    split = make_split(dataset, SplitConfig(val_fraction=0.2, seed=1))
    cfg = _cfg(max_train_samples=30)

    data = training_data.phase_data(dataset, split, cfg)

    assert len(data.train_indices) == 30
    assert len(data.val_indices) <= round(30 * len(split.val_indices) / len(split.train_indices))
    for indices, pool in ((data.train_indices, split.train_indices), (data.val_indices, split.val_indices)):
        assert set(indices) <= set(pool)
        assert len(set(indices)) == len(indices)
        assert set(dataset.labels[indices]) == set(range(NUM_CLASSES))
    counts = np.bincount(dataset.labels[data.train_indices], minlength=NUM_CLASSES)
    assert counts.argmax() == int(np.argmax(IMBALANCED))  # shares kept: the largest class stays largest

    again = training_data.phase_data(dataset, split, cfg)
    np.testing.assert_array_equal(again.train_indices, data.train_indices)
    other_seed = training_data.phase_data(dataset, split, _cfg(max_train_samples=30, seed=8))
    assert not np.array_equal(other_seed.train_indices, data.train_indices)

    uncapped = training_data.phase_data(dataset, split, _cfg(max_train_samples=0))
    np.testing.assert_array_equal(uncapped.train_indices, split.train_indices)


FIXED_SCHEDULE = dict(schedule="cosine", early_stopping_patience=1, average_last_epochs=1)


def test_train_on_validation_trains_on_both_parts_and_still_validates():
    dataset = _dataset(IMBALANCED)
    split = make_split(dataset, SplitConfig(val_fraction=0.2, seed=1))

    data = training_data.phase_data(dataset, split, _cfg(train_on_validation=True, **FIXED_SCHEDULE))

    assert sorted(data.train_indices) == sorted([*split.train_indices, *split.val_indices])
    np.testing.assert_array_equal(data.val_indices, split.val_indices)
    rare = dataset.labels[data.train_indices] == 1
    assert data.train_sample_weights[rare].min() == split.class_weight_by_index()[1]  # validation's own weighted alike
    capped = training_data.phase_data(
        dataset, split, _cfg(train_on_validation=True, max_train_samples=30, **FIXED_SCHEDULE)
    )
    assert len(capped.train_indices) == 30 and not set(capped.train_indices) <= set(split.train_indices)


@pytest.mark.parametrize(
    "override, named",
    [
        ({"schedule": "plateau"}, "schedule=cosine"),
        ({"early_stopping_patience": 0}, "early_stopping_patience >= 1"),
        ({"average_last_epochs": 0}, "average_last_epochs >= 1"),
    ],
)
def test_train_on_validation_is_refused_where_validation_would_choose(override, named):
    with pytest.raises(ConfigError, match=f"train_on_validation needs {named}"):
        _cfg(train_on_validation=True, **{**FIXED_SCHEDULE, **override})


def test_a_cap_below_the_class_count_keeps_one_per_class():
    labels = np.repeat(np.arange(NUM_CLASSES), [50, 2, 9, 80, 30, 20, 10])
    kept = training_data.stratified_cap(np.arange(len(labels)) + 1000, labels, cap=3, seed=0)
    assert len(kept) == NUM_CLASSES
    assert set(labels[kept - 1000]) == set(range(NUM_CLASSES))


def test_class_weighting_gives_each_training_image_its_class_weight():
    dataset = _dataset(IMBALANCED)
    split = make_split(dataset, SplitConfig(val_fraction=0.2, seed=1))

    data = training_data.phase_data(dataset, split, _cfg(class_weighting=True))
    by_index = split.class_weight_by_index()
    expected = np.array([by_index[int(k)] for k in dataset.labels[data.train_indices]], dtype=np.float32)
    np.testing.assert_allclose(data.train_sample_weights, expected)
    assert by_index[1] > by_index[3]  # the rare class weighs more than the common one

    batch = next(
        iter(
            make_dataset(
                dataset.images[data.train_indices],
                dataset.labels[data.train_indices],
                8,
                shuffle=False,
                seed=0,
                sample_weights=data.train_sample_weights,
            )
        )
    )
    images, labels, weights = batch
    assert images.dtype.name == "float32" and tuple(images.shape) == (8, 48, 48, 1)
    np.testing.assert_allclose(weights.numpy(), expected[:8])

    assert training_data.phase_data(dataset, split, _cfg(class_weighting=False)).train_sample_weights is None

    milder = training_data.phase_data(dataset, split, _cfg(class_weighting=True, class_weight_power=0.5))
    np.testing.assert_allclose(milder.train_sample_weights, np.sqrt(expected), rtol=1e-6)


def test_zero_epochs_skips_training_but_saves_the_model(tmp_path):
    dataset = _dataset([6] * NUM_CLASSES)
    split = make_split(dataset, SplitConfig(val_fraction=0.3, seed=1))

    result = train.train_frozen(dataset, split, _cfg(frozen_epochs=0), tmp_path / "frozen")

    assert result.epochs_run == 0 and result.best_epoch == 0 and result.history == {}
    assert result.model_path == tmp_path / "frozen" / "model.keras" and result.model_path.is_file()
    record = json.loads((tmp_path / "frozen" / "history.json").read_text())
    assert HISTORY_KEYS <= set(record) and record["history"] == {} and record["phase"] == "frozen"


def test_both_phases_train_save_and_record_history(tmp_path, monkeypatch, caplog):
    dataset = _dataset([10] * NUM_CLASSES)
    split = make_split(dataset, SplitConfig(val_fraction=0.2, seed=1))
    cfg = _cfg(batch_size=32)  # 56 training images: two steps per epoch
    calls = []

    def recording_make_dataset(images, labels, batch_size, **kwargs):
        calls.append(kwargs)
        return make_dataset(images, labels, batch_size, **kwargs)

    monkeypatch.setattr(feed_tf, "make_dataset", recording_make_dataset)
    caplog.set_level("INFO", logger="fer_pipeline.trainer")

    frozen = train.train_frozen(dataset, split, cfg, tmp_path / "frozen")
    tuned = train.fine_tune(frozen.model_path, dataset, split, cfg, tmp_path / "finetune")

    for result, phase, rate in ((frozen, "frozen", cfg.frozen_lr), (tuned, "finetune", cfg.finetune_lr)):
        assert result.epochs_run == 1 and result.best_epoch == 1 and result.seconds > 0
        assert result.model_path == tmp_path / phase / "model.keras" and result.model_path.is_file()
        assert EPOCH_KEYS <= set(result.history)
        assert result.history["learning_rate"] == [pytest.approx(rate)]
        record = json.loads((tmp_path / phase / "history.json").read_text())
        assert HISTORY_KEYS <= set(record)
        assert record["phase"] == phase and record["history"] == result.history
        assert record["train_samples"] == len(split.train_indices)
        assert record["val_samples"] == len(split.val_indices)
        assert TrainConfig.from_dict(record["config"]) == cfg
    assert "Phase frozen: start" in caplog.text and "Phase finetune: end" in caplog.text

    # Class weights reached fit as sample weights (training only, never validation).
    train_calls = [c for c in calls if c["shuffle"]]
    assert len(train_calls) == 2 and all(c["sample_weights"] is not None for c in train_calls)
    assert all(c.get("sample_weights") is None for c in calls if not c["shuffle"])

    # Fine-tuning changed the unfrozen last block only. With weights="none" there are no
    # pretrained statistics to protect, so that block's BatchNorm trains too (with
    # pretrained weights it stays frozen: tests/test_model.py).
    before, after = frozen.model.get_layer(BACKBONE_NAME), tuned.model.get_layer(BACKBONE_NAME)

    def changed(name: str) -> bool:
        return not np.array_equal(before.get_layer(name).get_weights()[0], after.get_layer(name).get_weights()[0])

    assert changed("conv5_block32_1_conv")
    assert not changed("conv5_block31_1_conv")
    assert not changed("conv1_conv")
    assert changed("conv5_block32_1_bn") and changed("bn")
    assert not changed("conv5_block31_1_bn")


def test_a_batch_larger_than_the_training_set_holds_each_image_once(tmp_path, monkeypatch, caplog):
    """The feed fills a batch from a repeating stream: batch_size 500 on 28 images was one
    step of 500, each image about 18 times."""
    dataset = _dataset([5] * NUM_CLASSES)
    split = make_split(dataset, SplitConfig(val_fraction=0.2, seed=0))
    sizes = []

    def recording_make_dataset(images, labels, batch_size, **kwargs):
        sizes.append((kwargs["shuffle"], batch_size))
        return make_dataset(images, labels, batch_size, **kwargs)

    monkeypatch.setattr(feed_tf, "make_dataset", recording_make_dataset)
    caplog.set_level("WARNING", logger="fer_pipeline.trainer")
    cfg = _cfg(backbone="compact", unfreeze_from="", batch_size=500, frozen_epochs=1)
    train.train_frozen(dataset, split, cfg, tmp_path, feed=feed_tf.TfDataFeed())

    images = len(split.train_indices)
    assert (True, images) in sizes and all(size <= images for shuffled, size in sizes if shuffled)
    assert f"batch_size 500 is larger than its {images} training images" in caplog.text


def test_the_tensorflow_feed_trains_whole_epochs_from_one_repeating_pipeline(tmp_path):
    """One tf.data iterator for the phase (a new one each epoch idled a core in half the
    epochs); fit then ends each epoch after exactly the phase's steps."""
    import keras

    dataset = _dataset([5] * NUM_CLASSES)
    split = make_split(dataset, SplitConfig(val_fraction=0.2, seed=0))
    cfg = _cfg(backbone="compact", unfreeze_from="", batch_size=8, frozen_epochs=3)
    steps: list[int] = []

    class CountSteps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    feed = feed_tf.TfDataFeed()
    result = train.train_frozen(dataset, split, cfg, tmp_path, feed=feed, extra_callbacks=(CountSteps(),))
    assert result.epochs_run == 3
    assert steps == [-(-len(split.train_indices) // 8)] * 3
    batches, val = feed.batches(dataset, training_data.phase_data(dataset, split, cfg), cfg, 8, None)
    assert train.repeats_without_end(batches) and not train.repeats_without_end(val)
    per_epoch, _ = feed_tf.TfDataFeed(one_training_iterator=False).batches(
        dataset, training_data.phase_data(dataset, split, cfg), cfg, 8, None
    )
    assert not train.repeats_without_end(per_epoch)  # the benchmark's comparison: an iterator per epoch
    assert not train.repeats_without_end(np.zeros((4, 48, 48, 1)))
