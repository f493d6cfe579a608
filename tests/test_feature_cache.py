"""The frozen-phase feature cache: exact (the head on cached features gives the full
model's outputs on the same views), used only where exact, and phase 1 with it saves
the full model with the trained head. Backbone passes run eagerly (no tracing)."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from fer_pipeline import feature_cache, synthetic
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.model import BACKBONE_NAME, build_model, load_model
from fer_pipeline.split import make_split

CFG = TrainConfig(
    weights="none",
    dense_units=(16,),
    dropouts=(0.0,),
    batch_size=8,
    frozen_epochs=2,
    frozen_feature_cache=2,
    run_eagerly=True,
    seed=3,
)


@pytest.fixture(scope="module")
def densenet():
    keras.utils.set_random_seed(3)
    return build_model(CFG)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    images, _ = synthetic.make_images(1, seed=seed)
    return np.resize(images, (n, 48, 48))[..., None].astype("float32")


def test_head_on_cached_features_equals_the_full_model_on_the_same_views(densenet):
    cache = feature_cache.plan(CFG, densenet, "frozen")
    assert cache is not None and cache.views == 2 and cache.augment_stage is not None
    images = _pixels(6)
    # an augmented view, as the cache draws it; the full model then sees the same pixels (inference: no augmentation)
    view = keras.ops.convert_to_numpy(cache.augment_stage(images, training=True))
    assert not np.allclose(view, images)  # the view is augmented
    features = cache.features(view, view=None)
    expected = keras.ops.convert_to_numpy(densenet(view, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cache.head(features)), expected, atol=1e-5)
    # in training mode too: the frozen backbone's BatchNorm stays in inference mode (dropout is 0 here)
    plain = feature_cache.feature_model(densenet)
    no_aug = TrainConfig(**{**CFG.to_dict(), "horizontal_flip": False, "width_shift": 0.0, "height_shift": 0.0})
    bare = build_model(no_aug)
    bare.set_weights(densenet.get_weights())
    head_out = feature_cache.head_model(bare)(feature_cache.feature_model(bare)(images, training=True), training=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head_out), keras.ops.convert_to_numpy(bare(images, training=True)), atol=1e-5
    )
    assert plain.output.shape[-1] == 1664  # DenseNet169's pooled features


def test_the_head_shares_the_full_models_weights(densenet):
    head = feature_cache.head_model(densenet)
    assert {id(w) for w in head.weights} <= {id(w) for w in densenet.weights}
    assert [layer.name for layer in head.layers[1:]] == ["head_dense_1", "head_dropout_1", "predictions"]


def test_refused_where_not_exact(caplog):
    compact = TrainConfig(backbone="compact", weights="none", compact_widths=(4,), frozen_feature_cache=3)
    with caplog.at_level("WARNING", logger="fer_pipeline.feature_cache"):
        assert feature_cache.plan(compact, build_model(compact), "frozen") is None
    assert "compact backbone trains whole" in caplog.text
    assert feature_cache.refusal(CFG, build_model(CFG), "finetune").startswith("phase finetune")
    mixed = dataclasses.replace(CFG, mix="mixup")  # stored features are of whole images
    assert feature_cache.refusal(mixed, build_model(mixed), "frozen").startswith("mix=mixup mixes the images")
    assert feature_cache.plan(TrainConfig(weights="none"), None, "frozen") is None  # 0 = off, nothing checked


def test_epoch_e_trains_on_view_e_mod_n():
    views = [np.full((5, 3), v, dtype="float32") for v in range(2)]
    batches = feature_cache.CachedViews(views, np.arange(5), np.ones(5, "float32"), batch_size=2, seed=0)
    seen = []
    for _ in range(3):
        x, y, w = batches[0]
        seen.append(float(x[0, 0]))
        assert len(batches) == 3 and w.shape == (2,)
        batches.on_epoch_end()
    assert seen == [0.0, 1.0, 0.0]


def test_the_numpy_feed_augments_the_views_itself():
    from fer_pipeline.feed_numpy import NumpyFeed
    from fer_pipeline.feed_tf import TfDataFeed

    assert feature_cache.feed_augmenter(TfDataFeed(), CFG) is None  # the model's layers augment
    augment = feature_cache.feed_augmenter(NumpyFeed(), CFG)
    assert augment is not None and augment(_pixels(2), 1).shape == (2, 48, 48, 1)


def test_phase_1_with_the_cache_saves_the_full_model_with_the_trained_head(tmp_path, monkeypatch):
    from fer_pipeline import trainer

    initial = {}

    def build_and_record(cfg):  # the weights phase 1 starts from, whatever the random stream's state
        model = build_model(cfg)
        initial["backbone"] = model.get_layer(BACKBONE_NAME).get_weights()[0].copy()
        initial["head"] = [w.copy() for w in model.get_layer("head_dense_1").get_weights()]
        return model

    monkeypatch.setattr(trainer, "build_model", build_and_record)
    dataset = synthetic.train_dataset(3, seed=2)
    split = make_split(dataset, SplitConfig(val_fraction=0.34, seed=2))
    result = trainer.train_frozen(dataset, split, CFG, tmp_path)

    record = json.loads((tmp_path / "history.json").read_text())
    assert record["frozen_feature_cache_views"] == 2 and record["epochs_run"] == 2
    assert set(record["history"]) >= {"loss", "val_loss", "val_accuracy"}
    saved = load_model(tmp_path / "model.keras")
    assert saved.name == result.model.name and saved.get_layer(BACKBONE_NAME) is not None
    pixels = dataset.images[split.val_indices][..., None].astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(saved(pixels, training=False)),
        keras.ops.convert_to_numpy(result.model(pixels, training=False)),
        atol=1e-6,
    )
    changed = [not np.allclose(a, b) for a, b in zip(initial["head"], saved.get_layer("head_dense_1").get_weights())]
    assert any(changed)  # the head trained
    np.testing.assert_array_equal(initial["backbone"], saved.get_layer(BACKBONE_NAME).get_weights()[0])  # frozen
