"""One recipe, resolved one way: defaults, then the preset, then the overrides; the
same configs for the CLI, run-local, submit's checks and the components."""

from __future__ import annotations

import dataclasses

import pytest

from fer_pipeline.component_io import phase_config
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.presets import PRESETS
from fer_pipeline.recipe import fold, from_parameters, minimal_overrides, resolve


def test_overrides_win_over_the_preset_which_wins_over_the_defaults():
    recipe = resolve("cpu", {"frozen_epochs": 3, "val_fraction": 0.25, "seed": 7})
    assert recipe.train.backbone == PRESETS["cpu"]["backbone"]  # the preset's
    assert recipe.train.frozen_epochs == 3  # the override's
    assert recipe.train.finetune_lr == PRESETS["cpu"]["finetune_lr"]
    assert recipe.train.min_lr == TrainConfig.min_lr  # neither sets it: the default
    assert recipe.split == SplitConfig(val_fraction=0.25, seed=7)  # one seed for split and training
    assert recipe.train.seed == 7


def test_recipe_json_text_is_accepted_as_kfp_and_settings_files_may_hand_it_over():
    assert resolve("", '{"batch_size": 16, "compact_widths": [8, 16]}').train.compact_widths == (8, 16)


@pytest.mark.parametrize(
    "preset, overrides, named",
    [
        ("turbo", {}, "Unknown preset 'turbo'"),
        ("", {"frozen_epoch": 3}, "frozen_epoch"),
        ("", {"batch_size": 0}, "batch_size"),
        ("", "[1, 2]", "JSON object"),
        ("", "{not json", "JSON object"),
        ("cpu", {"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_a_bad_recipe_is_one_config_error_naming_what_is_wrong(preset, overrides, named):
    with pytest.raises(ConfigError, match=named):
        resolve(preset, overrides)


def test_fields_given_as_pipeline_parameters_fold_into_the_recipe():
    folded = fold({"preset": "cpu", "frozen_epochs": 5, "recipe": {"zoom": 0.1, "frozen_epochs": 9}, "registry": "r"})
    assert folded == {"preset": "cpu", "recipe": {"zoom": 0.1, "frozen_epochs": 5}, "registry": "r"}
    assert fold({"registry": "r"}) == {"registry": "r"}  # no recipe given: none added
    assert from_parameters({"preset": "cpu", "frozen_epochs": 5}).train.frozen_epochs == 5


def test_minimal_overrides_keep_only_what_differs_from_the_preset():
    wanted = {"batch_size": PRESETS["cpu"]["batch_size"], "frozen_epochs": 2, "max_train_samples": 0}
    assert minimal_overrides("cpu", wanted) == {"frozen_epochs": 2}
    assert resolve("cpu", minimal_overrides("cpu", wanted)).train == resolve("cpu", wanted).train


def test_a_training_component_resolves_the_same_config_with_its_backup_beside_the_model(tmp_path):
    cfg = phase_config("cpu", {"frozen_epochs": 2}, tmp_path / "model")
    assert cfg.backup_dir == f"{tmp_path / 'model'}-backup"
    assert dataclasses.replace(cfg, backup_dir="") == resolve("cpu", {"frozen_epochs": 2}).train


def test_record_params_hold_every_field_and_what_was_asked():
    params = resolve("cpu", {"frozen_epochs": 2}).params()
    assert params["preset"] == "cpu" and params["recipe"] == {"frozen_epochs": 2}
    names = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(SplitConfig)}
    assert names - {"backup_dir"} <= set(params)


def test_text_values_from_settings_files_are_typed_as_the_fields_are():
    recipe = resolve("", {"frozen_epochs": "2", "tta": "true", "frozen_lr": "3e-4", "compact_widths": "[8, 16]"})
    assert (recipe.train.frozen_epochs, recipe.train.tta, recipe.train.frozen_lr) == (2, True, 3e-4)
    assert recipe.train.compact_widths == (8, 16)
    for bad, named in (
        ({"frozen_epochs": "many"}, "frozen_epochs takes whole numbers"),
        ({"tta": "maybe"}, "tta takes true or false"),
        ({"frozen_lr": "fast"}, "frozen_lr takes a number"),
        ({"compact_widths": "8,16"}, "compact_widths takes a JSON list"),
    ):
        with pytest.raises(ConfigError, match=named):
            resolve("", bad)
