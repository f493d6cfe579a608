import pytest

from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError


def test_defaults_are_the_seed_projects_settings():
    cfg = TrainConfig()
    assert (cfg.image_size, cfg.batch_size, cfg.frozen_epochs, cfg.finetune_epochs) == (48, 64, 20, 10)
    assert (cfg.frozen_lr, cfg.finetune_lr) == (1e-4, 1e-5)
    assert (cfg.dense_units, cfg.dropouts) == ((256, 512), (0.4, 0.5))
    assert (cfg.width_shift, cfg.height_shift, cfg.early_stopping_patience, cfg.seed) == (0.1, 0.05, 3, 12)


def test_from_dict_keeps_defaults_for_unset_and_parses_tuples():
    cfg = TrainConfig.from_dict({"batch_size": 32, "weights": None, "dense_units": "[128]", "dropouts": [0.3]})
    assert cfg.batch_size == 32 and cfg.weights == "imagenet"
    assert cfg.dense_units == (128,) and cfg.dropouts == (0.3,)


def test_whole_number_lists_arrive_as_floats_from_kfp_and_become_ints():
    cfg = TrainConfig.from_dict(
        {"compact_widths": [16.0, 64.0, 128.0, 256.0], "dense_units": [128.0], "dropouts": [0.3]}
    )
    assert cfg.compact_widths == (16, 64, 128, 256) and all(type(w) is int for w in cfg.compact_widths)
    assert cfg.dense_units == (128,)
    with pytest.raises(ConfigError, match=r"compact_widths takes whole numbers, got 16.5"):
        TrainConfig.from_dict({"compact_widths": [16.5, 32]})
    with pytest.raises(ConfigError, match=r"compact_widths takes whole numbers, got 'wide'"):
        TrainConfig.from_dict({"compact_widths": ["wide"]})


@pytest.mark.parametrize("text, number", [("2.0", 2), ("1e3", 1000), ("40", 40)])
def test_a_whole_number_written_as_text_in_any_spelling_is_read(text, number):
    """Settings files and `--param frozen_epochs=2.0` hand over text; int("2.0") was a traceback."""
    cfg = TrainConfig.from_dict({"frozen_epochs": text})
    assert cfg.frozen_epochs == number and type(cfg.frozen_epochs) is int


def test_a_long_whole_number_as_text_keeps_every_digit():
    from fer_pipeline.config import _whole_number

    assert _whole_number("seed", "12345678901234567891") == 12345678901234567891  # float() would round it


def test_unknown_field_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="batchsize"):
        TrainConfig.from_dict({"batchsize": 3})
    with pytest.raises(ConfigError, match="image_size must be >= 32"):
        TrainConfig(image_size=16)
    with pytest.raises(ConfigError, match="same length"):
        TrainConfig(dense_units=(1, 2), dropouts=(0.1,))
