"""The model: shapes, preprocessing, saving, freezing and weights handling.

DenseNet169 is built with random weights ("none"): the ImageNet download is not
available here, and no test depends on what the weights are.
"""

from __future__ import annotations

import re
from dataclasses import replace

import keras
import numpy as np
import pytest

from fer_pipeline import synthetic
from fer_pipeline.classes import NUM_CLASSES
from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.model import (
    BACKBONE_NAME,
    PREPROCESS_OUTPUT_NAME,
    block_names,
    build_model,
    check_model_options,
    unfreeze_backbone,
)
from tiny_models import TINY_COMPACT

CFG = TrainConfig(weights="none", dense_units=(16,), dropouts=(0.5,), seed=3)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_model(CFG)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    images, _ = synthetic.make_images(1, seed=5)  # one image per class
    return images[..., np.newaxis].astype(np.float32)


def _is_bn(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def test_takes_raw_48x48_pixels_and_outputs_probabilities(model, pixels):
    assert model.input_shape == (None, 48, 48, 1)
    assert model.inputs[0].name == "image"
    probs = keras.ops.convert_to_numpy(model(pixels, training=False))
    assert probs.shape == (len(pixels), NUM_CLASSES)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()


def test_head_layers_are_named_from_config(model):
    names = [layer.name for layer in model.layers]
    assert {"head_dense_1", "head_dropout_1", "predictions", BACKBONE_NAME} <= set(names)
    assert model.get_layer("head_dense_1").units == 16
    assert model.get_layer("head_dropout_1").rate == 0.5


def test_preprocessing_matches_densenet_preprocess_input(model, pixels):
    preprocess = keras.Model(model.input, model.get_layer(PREPROCESS_OUTPUT_NAME).output)
    ours = keras.ops.convert_to_numpy(preprocess(pixels, training=False))
    rgb = np.repeat(pixels, 3, axis=-1)
    expected = keras.applications.densenet.preprocess_input(rgb.copy())
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_augmentation_is_off_at_inference_and_on_in_training(model, pixels):
    first = keras.ops.convert_to_numpy(model(pixels, training=False))
    second = keras.ops.convert_to_numpy(model(pixels, training=False))
    np.testing.assert_array_equal(first, second)

    augmented = keras.Model(model.input, model.get_layer("augment_translate").output)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augmented(pixels, training=False)), pixels)
    assert not np.array_equal(keras.ops.convert_to_numpy(augmented(pixels, training=True)), pixels)


def _reloaded_predicting_the_same(model: keras.Model, pixels: np.ndarray, path) -> keras.Model:
    """``model`` saved to ``path`` and loaded back, after checking it predicts exactly as before."""
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(pixels, training=False)),
        keras.ops.convert_to_numpy(model(pixels, training=False)),
    )
    return loaded


def test_saved_model_reloads_without_custom_objects_and_predicts_the_same(model, pixels, tmp_path):
    loaded = _reloaded_predicting_the_same(model, pixels, tmp_path / "model.keras")
    assert not loaded.get_layer(BACKBONE_NAME).trainable


def test_training_step_changes_the_head_but_not_the_frozen_backbone(pixels):
    model = build_model(CFG)
    backbone = model.get_layer(BACKBONE_NAME)
    assert not backbone.trainable
    assert len(model.trainable_weights) == 4  # head_dense_1 and predictions: kernel + bias each
    backbone_before = [w.copy() for w in backbone.get_weights()]
    head_before = model.get_layer("head_dense_1").get_weights()[0].copy()

    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(pixels, np.arange(len(pixels)))

    for before, after in zip(backbone_before, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(head_before, model.get_layer("head_dense_1").get_weights()[0])


@pytest.fixture(scope="module")
def unfreezable() -> keras.Model:
    """A model the unfreeze tests share (and change): each asserts the state it sets."""
    return build_model(CFG)


def test_unfreeze_whole_backbone_keeps_batchnorm_frozen(unfreezable, pixels):
    model = unfreezable
    count = unfreeze_backbone(model, "")
    layers = model.get_layer(BACKBONE_NAME).layers
    assert count == len(model.trainable_weights) > 4
    assert all(not layer.trainable for layer in layers if _is_bn(layer))
    assert all(layer.trainable for layer in layers if layer.weights and not _is_bn(layer))
    # Frozen BatchNorm runs in inference mode, so a training-mode call of the backbone
    # (what fit does) uses the moving statistics and gives the inference output.
    preprocess = keras.Model(model.input, model.get_layer(PREPROCESS_OUTPUT_NAME).output)
    features = preprocess(pixels, training=False)
    backbone = model.get_layer(BACKBONE_NAME)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(features, training=True)),
        keras.ops.convert_to_numpy(backbone(features, training=False)),
        atol=1e-5,
    )


def test_unfreeze_from_a_block_keeps_earlier_layers_frozen(unfreezable):
    model = unfreezable
    start = "conv5_block1_0_bn"
    assert start in block_names(model)
    unfreeze_backbone(model, start)
    layers = model.get_layer(BACKBONE_NAME).layers
    position = [layer.name for layer in layers].index(start)
    assert not any(layer.trainable for layer in layers[:position] if layer.weights)
    assert all(layer.trainable for layer in layers[position:] if layer.weights and not _is_bn(layer))
    assert not any(layer.trainable for layer in layers if _is_bn(layer))

    with pytest.raises(ConfigError, match=r"unfreeze_from='conv9_block1'.*conv4_block1_0_bn"):
        unfreeze_backbone(model, "conv9_block1")


def test_unfreeze_without_pretrained_statistics_trains_batchnorm(unfreezable, pixels):
    model = unfreezable
    unfreeze_backbone(model, "", freeze_batchnorm=False)
    layers = model.get_layer(BACKBONE_NAME).layers
    assert all(layer.trainable for layer in layers if _is_bn(layer))
    # Trainable BatchNorm normalises with the batch's statistics in training mode.
    preprocess = keras.Model(model.input, model.get_layer(PREPROCESS_OUTPUT_NAME).output)
    features = preprocess(pixels, training=False)
    backbone = model.get_layer(BACKBONE_NAME)
    trained, inferred = (keras.ops.convert_to_numpy(backbone(features, training=t)) for t in (True, False))
    assert not np.allclose(trained, inferred, atol=1e-5)


def test_larger_image_size_resizes_inside_and_loads_local_weights_file(model, pixels, tmp_path):
    weights_file = tmp_path / "densenet169_notop.weights.h5"
    model.get_layer(BACKBONE_NAME).save_weights(weights_file)

    bigger = build_model(TrainConfig(image_size=64, weights=str(weights_file), dense_units=(8,), dropouts=(0.1,)))
    assert bigger.input_shape == (None, 48, 48, 1)
    assert bigger.get_layer(BACKBONE_NAME).input_shape == (None, 64, 64, 3)
    probs = keras.ops.convert_to_numpy(bigger(pixels, training=False))
    assert probs.shape == (len(pixels), NUM_CLASSES)
    ours, loaded = (m.get_layer(BACKBONE_NAME).get_weights() for m in (model, bigger))
    for a, b in zip(ours, loaded):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(ConfigError, match=r"`weights`=.*nope\.h5.*\"none\""):
        build_model(TrainConfig(weights=str(missing)))


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"backbone": "compact", "unfreeze_from": "nolayer", "finetune_epochs": 1}, "unfreeze_from='nolayer'"),
        ({"unfreeze_from": "conv9_block1", "finetune_epochs": 1}, "unfreeze_from='conv9_block1'"),
        ({"weights": "/nonexistent/w.h5"}, "no such file exists"),
        ({"backbone": "compact", "weights": "/nonexistent/w.h5"}, "takes no weights file"),
    ],
)
def test_what_the_phases_would_refuse_is_refused_before_any_work(fields, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_model_options(replace(CFG, **fields))


def test_options_the_phases_accept_pass_the_early_check():
    check_model_options(replace(CFG, unfreeze_from="conv5_block1_0_bn", finetune_epochs=1))
    check_model_options(replace(TINY_COMPACT, unfreeze_from="nolayer", finetune_epochs=0))  # no phase 2 to unfreeze


def test_failed_imagenet_download_is_a_config_error(monkeypatch):
    def no_network(**kwargs):
        raise OSError("URL fetch failure: no route to host")

    monkeypatch.setattr(keras.applications, "DenseNet169", no_network)
    with pytest.raises(ConfigError, match=r"`weights`='imagenet'.*no route to host.*local"):
        build_model(TrainConfig(weights="imagenet"))


def test_imagenet_in_any_case_means_the_imagenet_weights_to_the_check_and_the_build(monkeypatch):
    asked = []

    def recording(**kwargs):
        asked.append(kwargs["weights"])
        raise OSError("offline")

    monkeypatch.setattr(keras.applications, "DenseNet169", recording)
    check_model_options(TrainConfig(weights="ImageNet"))
    with pytest.raises(ConfigError, match="offline"):
        build_model(TrainConfig(weights="ImageNet"))
    assert asked == ["imagenet"]  # not "no such file exists"


SE = replace(TINY_COMPACT, compact_se=2)


def test_squeeze_excitation_gates_each_block_and_survives_saving(pixels, tmp_path):
    model = build_model(SE)
    backbone = model.get_layer(BACKBONE_NAME)
    # a w/r bottleneck of at least 4 units, then one gate per filter
    assert [backbone.get_layer(f"block{b}_se_reduce").units for b in (1, 2)] == [4, 4]
    assert [backbone.get_layer(f"block{b}_se_expand").units for b in (1, 2)] == [4, 8]
    assert not any("_se_" in layer.name for layer in build_model(TINY_COMPACT).get_layer(BACKBONE_NAME).layers)

    _reloaded_predicting_the_same(model, pixels, tmp_path / "se.keras")

    # the gates multiply the block's features: closed gates leave the last block's map all zeros
    expand = backbone.get_layer("block2_se_expand")
    kernel, bias = expand.get_weights()
    expand.set_weights([np.zeros_like(kernel), np.full_like(bias, -100.0)])
    features = keras.Model(backbone.input, backbone.get_layer("block2_se_scale").output)
    assert np.abs(keras.ops.convert_to_numpy(features(pixels / 255.0))).max() == 0.0


def test_a_negative_or_misplaced_squeeze_excitation_ratio_is_a_config_error():
    with pytest.raises(ConfigError, match=r"compact_se must be >= 0 \(0 = off\), got -1"):
        TrainConfig(backbone="compact", weights="none", compact_se=-1)
    with pytest.raises(ConfigError, match=r"compact_se=8 is the compact network's; backbone='densenet169' has no"):
        TrainConfig(weights="none", compact_se=8)
