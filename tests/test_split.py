import json

import numpy as np
import pytest

from fer_pipeline.classes import CLASSES
from fer_pipeline.config import SplitConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.errors import ConfigError, DatasetError
from fer_pipeline.split import Split, balanced_class_weights, make_split


def _dataset(per_class: list[int], n_test: int = 2) -> FerDataset:
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(per_class)] + [np.arange(7).repeat(n_test)]).astype(
        np.uint8
    )
    n = len(labels)
    splits = np.array(["train"] * sum(per_class) + ["test"] * (7 * n_test))
    return FerDataset(
        np.random.default_rng(0).integers(0, 255, (n, 48, 48), dtype=np.uint8),
        labels,
        splits,
        np.array([""] * n),
        np.array([f"k{i}" for i in range(n)]),
        {},
    )


def test_split_is_stratified_disjoint_and_train_only():
    ds = _dataset([100, 10, 50, 200, 80, 60, 40])
    split = make_split(ds, SplitConfig(val_fraction=0.2, seed=12))
    assert not set(split.train_indices) & set(split.val_indices)
    assert set(split.train_indices) | set(split.val_indices) == set(ds.indices("train"))
    for i, name in enumerate(CLASSES):
        total = split.train_counts[name] + split.val_counts[name]
        assert total == [100, 10, 50, 200, 80, 60, 40][i]
        assert split.val_counts[name] == pytest.approx(0.2 * total, abs=1)


def test_split_is_reproducible_bit_for_bit_and_seed_dependent():
    ds = _dataset([30] * 7)
    a, b = make_split(ds, SplitConfig(seed=12)), make_split(ds, SplitConfig(seed=12))
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    c = make_split(ds, SplitConfig(seed=13))
    assert not np.array_equal(a.val_indices, c.val_indices)


def test_balanced_weights_follow_n_over_k_count():
    counts = dict(zip(CLASSES, [100, 10, 50, 200, 80, 60, 40]))
    weights = balanced_class_weights(counts)
    n = sum(counts.values())
    for name in CLASSES:
        assert weights[name] == pytest.approx(n / (7 * counts[name]))
    # the weighted count of every class is the same: each class carries n/k of the loss
    assert {round(weights[c] * counts[c], 6) for c in CLASSES} == {round(n / 7, 6)}


def test_split_round_trips_through_json(tmp_path):
    split = make_split(_dataset([20] * 7), SplitConfig(val_fraction=0.25, seed=3))
    loaded = Split.load(split.save(tmp_path / "split.json"))
    assert np.array_equal(loaded.train_indices, split.train_indices)
    assert loaded.class_weights == split.class_weights
    assert loaded.class_weight_by_index() == {i: split.class_weights[c] for i, c in enumerate(CLASSES)}


def test_too_few_images_in_a_class_names_the_class_and_count():
    with pytest.raises(DatasetError, match=r"disgust=1"):
        make_split(_dataset([20, 1, 20, 20, 20, 20, 20]), SplitConfig())


def test_val_fraction_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="val_fraction"):
        SplitConfig(val_fraction=1.5)
