"""bench/recalibration.py: BatchNorm statistics re-estimated and the class prior re-applied on a saved network."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bench import recalibration


def norm_after(noise: float) -> keras.Model:
    """image -> [training-only noise named as augmentation] -> BatchNorm -> 7-way softmax."""
    inputs = keras.Input((3,), name="image")
    x = keras.layers.GaussianNoise(noise, seed=1, name="augment_noise")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="norm")(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x), name="chain")


def test_statistics_become_the_mean_over_every_batch_and_the_momentum_comes_back():
    x = np.random.default_rng(0).normal(5.0, 2.0, (3 * recalibration.BATCH, 3)).astype("float32")
    model = norm_after(noise=0.0)
    recalibration.reestimate_batch_norm(model, x, augmented=False)
    norm = model.get_layer("norm")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), x.mean(axis=0), rtol=1e-5)
    # Equal batches: the mean of their variances, a little under the pooled variance.
    batches = x[np.random.default_rng(0).permutation(len(x))].reshape(3, recalibration.BATCH, 3)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(norm.moving_variance), batches.var(axis=1).mean(axis=0), rtol=1e-4
    )
    assert norm.momentum == 0.9


def test_augmentation_layers_run_only_when_asked():
    x = np.random.default_rng(1).normal(0.0, 0.1, (2 * recalibration.BATCH, 3)).astype("float32")
    variances = {}
    for augmented in (False, True):
        model = norm_after(noise=1.0)
        recalibration.reestimate_batch_norm(model, x, augmented=augmented)
        variances[augmented] = keras.ops.convert_to_numpy(model.get_layer("norm").moving_variance)
    np.testing.assert_allclose(variances[False], x.var(axis=0), rtol=0.05)  # the images as they are
    assert (variances[True] > variances[False] + 0.5).all()  # plus the noise's variance, 1


def test_a_network_that_is_not_a_chain_is_refused_by_layer_name():
    inputs = keras.Input((3,), name="image")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs])
    with pytest.raises(SystemExit, match="layer 'gray_to_rgb' takes several inputs"):
        recalibration.check_chain(keras.Model(inputs, x, name="densenet_like"))


def test_the_command_scores_the_saved_network_the_prior_powers_and_both_re_estimates(saved_network, capsys):
    model, data, images = saved_network
    recalibration.main([model, "--tau", "0.5", "--data", data])
    out = capsys.readouterr().out
    assert f"validation: {images} images; 8 BatchNorm layers" in out  # two per compact block
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| network")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| as saved",
        "| prior^0.5",
        "| BatchNorm re-estimated on the training images through its augmentation",
        "| BatchNorm re-estimated on the training images as they are",
    ]
    assert rows[0].endswith("|  |")  # the reference has no change against itself
    assert all(row.count(" / ") == 2 for row in rows)  # accuracy / macro-F1, bare and ten views


def test_a_shift_below_one_pixel_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recalibration.main([str(tmp_path / "missing.keras"), "--shift", "0"])
    assert "--shift takes whole pixels >= 1, got 0" in capsys.readouterr().err
