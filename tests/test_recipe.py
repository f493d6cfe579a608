"""The recipe options: compact backbone, augmentation, label smoothing, schedule, TTA, presets."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fer_pipeline import trainer as train
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.model import (
    BACKBONE_NAME,
    Shift,
    block_names,
    build_model,
    load_model,
    tta_offsets,
    unfreeze_backbone,
    with_flip_tta,
)
from fer_pipeline.optim import SparseCrossentropy, learning_rate_for
from fer_pipeline.presets import FLOAT32_CPU_EPOCHS, PRESETS
from fer_pipeline.recipe import RECIPE_FIELDS, from_parameters, resolve
from fer_pipeline.split import make_split
from pipelines.run_local import float32_epochs_note, parse_args, pipeline_arguments
from tests.test_train import _dataset

COMPACT = TrainConfig(backbone="compact", weights="none", compact_widths=(8, 16), dense_units=(16,), dropouts=(0.2,))


def _pixels(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 48, 48, 1)).astype("float32")


def test_compact_backbone_trains_from_phase_one_and_its_batchnorm_trains_when_unfrozen():
    model = build_model(COMPACT)
    backbone = model.get_layer(BACKBONE_NAME)
    assert model.name == "fer_compact" and model.output_shape == (None, 7)
    assert backbone.trainable  # nothing pretrained to protect: phase 1 trains the whole network
    assert block_names(model) == ["block1_conv1", "block2_conv1"]
    assert unfreeze_backbone(model, "block2_conv1", freeze_batchnorm=COMPACT.pretrained) > 0
    assert not backbone.get_layer("block1_conv1").trainable
    assert backbone.get_layer("block2_conv1_bn").trainable
    assert not COMPACT.pretrained and TrainConfig(weights="imagenet").pretrained


def test_the_default_compact_network_stays_compact():
    params = build_model(TrainConfig(backbone="compact", weights="none")).count_params()
    assert 0.5e6 < params < 3e6  # "a few million parameters at most"


def test_compact_refuses_a_weights_file_and_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"backbone=\"compact\".*weights=\"none\""):
        build_model(TrainConfig(backbone="compact", weights=str(tmp_path / "w.h5")))


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone", "resnet"),
        ("schedule", "linear"),
        ("rotation", 1.5),
        ("label_smoothing", -0.1),
        ("compact_widths", ()),
        ("head_pooling", "max"),
        ("class_weight_power", 2.0),
    ],
)
def test_bad_recipe_values_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_augmentation_options_add_their_layers_and_are_identity_at_inference():
    cfg = TrainConfig(**{**COMPACT.to_dict(), "rotation": 0.05, "zoom": 0.1, "erasing": 0.5})
    model = build_model(cfg)
    names = {layer.name for layer in model.layers}
    assert {"augment_flip", "augment_translate", "augment_rotate", "augment_zoom", "augment_erase"} <= names
    stage = keras.Model(model.input, model.get_layer("augment_erase").output)
    x = _pixels()
    np.testing.assert_array_equal(stage(x, training=False), x)
    assert not np.allclose(stage(x, training=True), x)


def test_flip_tta_averages_the_image_and_its_mirror_and_survives_save_and_load(tmp_path):
    model = build_model(COMPACT)
    tta = with_flip_tta(model)
    x = _pixels()
    expected = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(tta.predict(x[:, :, ::-1], verbose=0), expected, atol=1e-6)  # mirror-invariant
    tta.save(tmp_path / "model.keras")
    np.testing.assert_allclose(load_model(tmp_path / "model.keras").predict(x, verbose=0), expected, atol=1e-6)


def _numpy_shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Edge-repeating shift, written independently of the layer (NumPy index clipping)."""
    h, w = x.shape[1:3]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return x[:, rows][:, :, cols]


@pytest.mark.parametrize("dy, dx", [(2, 0), (-3, 0), (0, 1), (0, -2), (1, -1)])
def test_shift_moves_the_image_and_repeats_its_edges(dy, dx):
    x = _pixels(2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Shift(dy, dx)(x)), _numpy_shift(x, dy, dx))
    if dy > 0:  # the top rows are copies of the first row; the content moved down
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(Shift(dy, dx)(x))[:, :dy], np.repeat(_numpy_shift(x, 0, dx)[:, :1], dy, axis=1)
        )


def test_shifted_tta_averages_ten_views_and_survives_save_and_load(tmp_path):
    model = build_model(COMPACT)
    tta = with_flip_tta(model, shift=2)
    x = _pixels()
    views = [_numpy_shift(base, dy, dx) for base in (x, x[:, :, ::-1]) for dy, dx in tta_offsets(2)]
    assert len(views) == 10
    expected = np.mean([model.predict(v, verbose=0) for v in views], axis=0)
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=1e-5)
    assert not np.allclose(expected, with_flip_tta(model).predict(x, verbose=0), atol=1e-5)  # the shifts count
    tta.save(tmp_path / "model.keras")
    np.testing.assert_allclose(load_model(tmp_path / "model.keras").predict(x, verbose=0), expected, atol=1e-5)


def test_tta_shift_needs_tta_and_a_sensible_size():
    with pytest.raises(ConfigError, match="tta_shift=2 needs tta=true"):
        TrainConfig(tta_shift=2)
    with pytest.raises(ConfigError, match="tta_shift must be in"):
        TrainConfig(tta=True, tta_shift=30)


def test_label_smoothing_loss_matches_the_formula():
    labels = np.array([0, 3, 6])
    probs = np.random.default_rng(1).dirichlet(np.ones(7), size=3).astype("float32")
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    np.testing.assert_allclose(SparseCrossentropy()(labels, probs), plain, rtol=1e-5)
    s = 0.1
    targets = np.eye(7)[labels] * (1 - s) + s / 7
    expected = -(targets * np.log(probs)).sum(axis=1).mean()
    np.testing.assert_allclose(SparseCrossentropy(label_smoothing=s)(labels, probs), expected, rtol=1e-5)


def test_cosine_schedule_decays_to_zero_over_the_phase_and_plateau_keeps_a_constant():
    assert learning_rate_for(TrainConfig(), 1e-3, epochs=5, steps_per_epoch=10) == 1e-3
    schedule = learning_rate_for(TrainConfig(schedule="cosine"), 1e-3, epochs=5, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 25, 50)]
    assert (
        rates[0] == pytest.approx(1e-3) and rates[1] == pytest.approx(5e-4, rel=1e-3) and rates[2] == pytest.approx(0)
    )
    assert not any(
        isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in train.phase_callbacks(TrainConfig(schedule="cosine"))
    )
    assert any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in train.phase_callbacks(TrainConfig()))


def test_compact_two_phases_with_cosine_smoothing_and_tta_end_in_a_tta_model(tmp_path):
    dataset = _dataset([6] * 7)
    split = make_split(dataset, SplitConfig(val_fraction=0.3, seed=1))
    cfg = TrainConfig(
        **{
            **COMPACT.to_dict(),
            "batch_size": 16,
            "frozen_epochs": 2,
            "finetune_epochs": 1,
            "schedule": "cosine",
            "label_smoothing": 0.1,
            "tta": True,
            "class_weighting": False,
            "run_eagerly": True,
            "frozen_lr": 1e-2,
        }
    )
    frozen = train.train_frozen(dataset, split, cfg, tmp_path / "frozen")
    rates = frozen.history["learning_rate"]
    assert rates[0] == pytest.approx(1e-2) and rates[1] < rates[0]  # the cosine schedule moved between epochs
    tuned = train.fine_tune(frozen.model_path, dataset, split, cfg, tmp_path / "finetune")
    loaded = load_model(tuned.model_path)
    assert loaded.get_layer("tta_flip") is not None
    x = dataset.images[:3, ..., None].astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), loaded.predict(x[:, :, ::-1], verbose=0), atol=1e-6)


def test_cpu_preset_reaches_the_pipeline_by_name_and_explicit_flags_win():
    run = parse_args(["--data", "fer.zip", "--preset", "cpu", "--epochs", "3"])
    arguments = pipeline_arguments(run, "/data/fer.zip")
    assert arguments["preset"] == "cpu"
    # only what differs from the preset travels as an override: the flag's epochs, not the preset's;
    # the phase the preset turns off (finetune_epochs=0) stays off
    assert arguments["recipe"] == {"frozen_epochs": 3}
    resolved = from_parameters(arguments)
    assert resolved.train.backbone == "compact" and resolved.train.tta is True and resolved.split.val_fraction == 0.1
    assert (resolved.train.frozen_epochs, resolved.train.finetune_epochs) == (3, 0)
    plain = parse_args(["--data", "fer.zip", "--epochs", "3"])
    assert (plain.frozen_epochs, plain.finetune_epochs) == (3, 3)
    assert resolved.train.batch_size == PRESETS["cpu"]["batch_size"]
    sample = pipeline_arguments(parse_args([]), "sample.zip")
    assert sample["preset"] == "" and from_parameters(sample).train.backbone == "densenet169"


NO_BF16 = frozenset({"avx2", "fma", "avx512f"})  # AVX-512 without bfloat16: training runs in float32


def test_a_preset_sized_for_bfloat16_names_the_epochs_that_keep_its_time_on_a_float32_cpu():
    run = parse_args(["--data", "fer.zip", "--preset", "cpu"])
    note = float32_epochs_note(run, cpu_flags=NO_BF16, gpu=False)
    assert str(PRESETS["cpu"]["frozen_epochs"]) in note
    # 100 float32 epochs of 28,709 images on the AMD host and at run 4's pace (1/0.9 of their measured epochs)
    assert "~1.6 to ~3.9 h" in note and "110-minute time budget" in note
    assert "\n" not in note
    # silent where bfloat16 runs, on a GPU, when EPOCHS= chose, and for a run without such a preset
    assert float32_epochs_note(run, cpu_flags=NO_BF16 | {"avx512_bf16"}, gpu=False) == ""
    assert float32_epochs_note(run, cpu_flags=NO_BF16 | {"amx_bf16"}, gpu=False) == ""
    assert float32_epochs_note(run, cpu_flags=NO_BF16, gpu=True) == ""
    assert (
        float32_epochs_note(parse_args(["--data", "f.zip", "--preset", "cpu", "--epochs", "48"]), NO_BF16, False) == ""
    )
    assert float32_epochs_note(parse_args(["--data", "fer.zip"]), cpu_flags=NO_BF16, gpu=False) == ""


def test_every_preset_key_is_a_recipe_field_and_builds_a_valid_config():
    for name, values in PRESETS.items():
        assert set(values) <= RECIPE_FIELDS, name
        resolved = resolve(name)
        assert all(resolved.to_dict()[k] == (tuple(v) if isinstance(v, list) else v) for k, v in values.items())
    with pytest.raises(ConfigError, match="cpu"):
        resolve("gpu-fast")


def test_compact_with_the_default_imagenet_weights_says_they_are_not_used(caplog):
    caplog.set_level("WARNING", logger="fer_pipeline.model")
    build_model(TrainConfig(**{**COMPACT.to_dict(), "weights": "imagenet"}))
    assert "no ImageNet weights" in caplog.text


def test_flatten_head_keeps_every_position_of_the_last_feature_map():
    cfg = TrainConfig(backbone="compact", weights="none", compact_widths=(4, 8), head_pooling="flatten")
    model = build_model(cfg)
    # 48 -> 24 -> 12 after two pooled blocks: 12 * 12 * 8 features reach the first Dense.
    assert model.get_layer("flatten").output.shape[-1] == 12 * 12 * 8
    assert model.get_layer("head_dense_1").kernel.shape[0] == 12 * 12 * 8
    avg = build_model(TrainConfig(backbone="compact", weights="none", compact_widths=(4, 8)))
    assert avg.get_layer("head_dense_1").kernel.shape[0] == 8


def test_the_generated_sample_runs_eagerly_unless_a_preset_or_real_data_decides():
    assert from_parameters(pipeline_arguments(parse_args([]), "sample.zip")).train.run_eagerly
    assert not from_parameters(pipeline_arguments(parse_args(["--data", "fer.zip"]), "fer.zip")).train.run_eagerly
    assert not from_parameters(pipeline_arguments(parse_args(["--preset", "cpu"]), "sample.zip")).train.run_eagerly


def test_the_float32_note_stays_silent_when_the_precision_was_chosen():
    from fer_pipeline.presets import float32_epochs_note

    epochs = PRESETS["cpu"]["frozen_epochs"]
    assert float32_epochs_note("cpu", epochs, "auto", "EPOCHS=", cpu_flags=NO_BF16, gpu=False)
    # without a budget (time_budget_minutes=0 beside the preset), the epochs that keep run 4's time
    unbudgeted = float32_epochs_note("cpu", epochs, "auto", "EPOCHS=", 0.0, cpu_flags=NO_BF16, gpu=False)
    assert f"EPOCHS={FLOAT32_CPU_EPOCHS['cpu']} keeps" in unbudgeted and "budget" not in unbudgeted
    assert float32_epochs_note("cpu", epochs, "float32", "EPOCHS=", cpu_flags=NO_BF16, gpu=False) == ""
    assert float32_epochs_note("cpu", epochs, "mixed_bfloat16", "EPOCHS=", cpu_flags=NO_BF16, gpu=False) == ""
