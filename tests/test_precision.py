"""TrainConfig.precision: the policy choice as a pure function of faked CPU flags and GPUs,
the deprecated mixed_precision alias, both feeds setting the policy, and history.json
recording it. No special hardware needed."""

from __future__ import annotations

import json

import keras
import pytest

from fer_pipeline import precision
from fer_pipeline.config import TrainConfig
from fer_pipeline.errors import ConfigError
from fer_pipeline.precision import choose_policy, requested_precision
from fer_pipeline.recipe import resolve

ZEN4 = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}  # this project's EPYC: no AMX
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.fixture(autouse=True)
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    ("flags", "gpus", "expected"),
    [
        (set(), [], "float32"),
        ({"avx2"}, [], "float32"),
        (ZEN4 - {"avx512_bf16"}, [], "float32"),
        (ZEN4, [], "mixed_bfloat16"),  # avx512_bf16 alone: measured faster here (docs/benchmarks.md)
        (SAPPHIRE_RAPIDS, [], "mixed_bfloat16"),
        (set(), [(9, 0)], "mixed_bfloat16"),  # H100/H200
        (set(), [(8, 0), (8, 6)], "mixed_bfloat16"),  # A100 + A10
        (set(), [(7, 0)], "mixed_float16"),  # V100
        (set(), [(8, 0), (7, 5)], "mixed_float16"),  # the oldest card decides
        (set(), [None], "mixed_float16"),  # capability unknown: the old default
        (SAPPHIRE_RAPIDS, [(7, 5)], "mixed_float16"),  # a GPU trains, not the CPU
    ],
)
def test_auto_follows_the_hardware(flags, gpus, expected):
    policy, reason = choose_policy("auto", cpu_flags=flags, gpu_capabilities=gpus)
    assert policy == expected and reason.startswith("auto")


@pytest.mark.parametrize("asked", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_taken_as_it_is(asked):
    assert choose_policy(asked, cpu_flags=set(), gpu_capabilities=[(9, 0)])[0] == asked


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig(precision="float16")
    with pytest.raises(ConfigError, match="precision"):
        resolve("", {"precision": "bf16"})


def test_the_deprecated_mixed_precision_false_means_float32_under_auto_only():
    assert requested_precision(TrainConfig()) == "auto"
    assert requested_precision(resolve("", {"mixed_precision": False}).train) == "float32"  # an old recipe
    assert requested_precision(TrainConfig(mixed_precision=False, precision="mixed_bfloat16")) == "mixed_bfloat16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


def test_capabilities_parse_from_tuples_and_strings():
    assert precision._capability((8, 0)) == (8, 0)
    assert precision._capability("9.0") == (9, 0)
    assert precision._capability(None) is None and precision._capability("sm") is None


def test_apply_precision_sets_the_global_policy_and_logs_why(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(SAPPHIRE_RAPIDS))
    with caplog.at_level("INFO", logger="fer_pipeline.precision"):
        assert precision.apply_precision(TrainConfig(), gpus=[]) == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert "amx_bf16" in caplog.text
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    assert precision.apply_precision(TrainConfig(), gpus=[]) == "float32"
    assert precision.apply_precision(TrainConfig(precision="float32"), gpus=[(9, 0)]) == "float32"


def test_the_numpy_feed_sets_the_policy_too():
    from fer_pipeline.feed_numpy import NumpyFeed

    NumpyFeed().prepare(TrainConfig(precision="mixed_bfloat16"))
    assert keras.config.dtype_policy().name == "mixed_bfloat16"


def test_a_bfloat16_model_keeps_a_float32_output():
    from fer_pipeline.model import OUTPUT_NAME, build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from tiny_models import TINY_COMPACT

    model = build_model(TINY_COMPACT)
    assert model.get_layer("head_dense_1").compute_dtype == "bfloat16"
    assert model.get_layer(OUTPUT_NAME).compute_dtype == "float32" and model.outputs[0].dtype == "float32"


def test_history_records_the_resolved_policy(tmp_path):

    from fer_pipeline import synthetic
    from fer_pipeline.config import SplitConfig
    from fer_pipeline.split import make_split
    from fer_pipeline.trainer import train_frozen

    dataset = synthetic.train_dataset(4, seed=1)
    split = make_split(dataset, SplitConfig(val_fraction=0.5, seed=1))
    cfg = TrainConfig(
        backbone="compact",
        weights="none",
        compact_widths=(4,),
        dense_units=(8,),
        dropouts=(0.0,),
        batch_size=8,
        frozen_epochs=1,
        run_eagerly=True,
        precision="mixed_bfloat16",
    )
    train_frozen(dataset, split, cfg, tmp_path)
    record = json.loads((tmp_path / "history.json").read_text())
    assert record["dtype_policy"] == "mixed_bfloat16" and record["config"]["precision"] == "mixed_bfloat16"
