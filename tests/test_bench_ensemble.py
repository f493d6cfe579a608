"""bench/ensemble.py: several networks' ten-view probabilities averaged, against one reference."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bench import ensemble
from bench.tta_views import Scored


def test_networks_average_their_probabilities_at_the_sum_of_their_times():
    a = Scored(np.array([[0.9, 0.1], [0.4, 0.6]]), 1.0)
    b = Scored(np.array([[0.3, 0.7], [0.2, 0.8]]), 2.5)
    mean = ensemble.mean_of([a, b])
    np.testing.assert_allclose(mean.probabilities, [[0.6, 0.4], [0.3, 0.7]])
    assert mean.seconds == 3.5


def test_networks_of_different_classes_are_refused_by_path_before_any_scoring(tmp_path):
    import keras

    for name, classes in (("seven.keras", 7), ("three.keras", 3)):
        inputs = keras.Input((48, 48, 1))
        x = keras.layers.Flatten()(inputs)
        keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x)).save(tmp_path / name)
    paths = [str(tmp_path / "seven.keras"), str(tmp_path / "three.keras")]
    with pytest.raises(SystemExit, match=rf"\({paths[0]}: 7, {paths[1]}: 3\): average only classifiers"):
        ensemble.load_networks(paths)


def test_agreement_counts_images_labelled_alike_and_the_rest_some_member_or_the_mean_gets_right():
    y = np.array([0, 1, 1, 0, 1])
    one_hot = lambda labels: np.eye(2)[labels]  # noqa: E731
    members = [Scored(one_hot([0, 1, 0, 1, 1]), 0.0), Scored(one_hot([0, 1, 1, 1, 0]), 0.0)]
    # alike on images 0, 1, 3; they split on 2 and 4, where one member is right each time;
    # the mean breaks both ties toward class 0 (argmax of [0.5, 0.5]): right on neither
    mean = ensemble.mean_of(members)
    assert ensemble.agreement(members, mean, y) == (
        "members agree on 3 of 5 images (60.0%); on the other 2, some member is right on 2, their mean on 0"
    )
    sharper = Scored(np.array([[1, 0], [0, 1], [0.4, 0.6], [0, 1], [0.3, 0.7]]), 0.0)
    assert ensemble.agreement(members, sharper, y).endswith("some member is right on 2, their mean on 2")


def test_a_pipeline_model_is_named_by_its_folder():
    assert ensemble.label("runs/a/member13/model.keras") == "runs/a/member13"
    assert ensemble.label("build/bench/models/net@12.keras") == "net@12.keras"


def test_members_of_one_name_keep_a_row_each():
    assert ensemble.row_names(["a/net.keras", "b/net.keras", "c/other.keras"]) == [
        "a/net.keras",
        "b/net.keras",
        "other.keras",
    ]
    assert ensemble.row_names(["net.keras", "net.keras"]) == ["net.keras (#1)", "net.keras (#2)"]


def test_the_command_scores_the_reference_each_member_and_both_means(saved_network, tmp_path, capsys):
    model, data, images = saved_network
    twin = tmp_path / "twin.keras"
    shutil.copy(model, twin)
    ensemble.main([model, model, str(twin), str(twin), "--data", data])
    out = capsys.readouterr().out
    assert f"validation: {images} images; every network through ten views, shifted 2 px" in out
    assert "change vs the reference (95% interval)" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| views")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| net.keras (reference)",
        "| net.keras",
        f"| {twin} (#2)",  # one file given twice: a row each, numbered
        f"| {twin} (#3)",
        "| mean of the 3 member(s)",
        "| mean of the reference and the 3 member(s)",
    ]
    # copies of one network: every mean predicts what the reference does
    assert all("same predictions" in row for row in rows[1:])
    assert (
        f"members agree on {images} of {images} images (100.0%); on the other 0, some member is right on 0, their mean on 0"
        in out
    )


def test_a_missing_member_is_refused_by_name_before_the_data_loads(saved_network, tmp_path):
    from fer_pipeline.errors import UnusableFileError

    model, _, _ = saved_network
    gone = tmp_path / "gone.keras"
    # no data file either: the member's refusal comes first
    with pytest.raises(UnusableFileError, match=f"{gone} does not exist or is not a file"):
        ensemble.main([model, str(gone), "--data", str(tmp_path / "no-data.npz.xz")])
