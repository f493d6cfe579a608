"""The local registry: versions, the champion gate, alias moves, references and the models CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pytest

from fer_pipeline import cli_models
from fer_pipeline.errors import ConfigError
from fer_pipeline.registry import (
    CHALLENGER,
    CHAMPION,
    INDEX_FILE,
    LocalRegistry,
    RegistryError,
    champion_gate,
    default_registry_root,
)

LABELS = {"dataset_checksum": "sha256:abc", "commit": "0123456789ab"}


def make_model_dir(parent: Path, tag: str) -> Path:
    directory = parent / f"trained-{tag}"
    directory.mkdir(parents=True)
    (directory / "model.keras").write_text(f"weights {tag}")
    (directory / "history.json").write_text("{}")
    return directory


@pytest.fixture()
def registry(tmp_path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry")


def register(registry: LocalRegistry, tmp_path: Path, f1: float, **metrics) -> object:
    tag = f"{len(list(tmp_path.glob('trained-*'))) + 1}"
    return registry.register(
        "fer",
        make_model_dir(tmp_path, tag),
        {"macro_f1": f1, "accuracy": 0.5, **metrics},
        labels=LABELS,
        description=f"run {tag}",
    )


# ---- champion_gate -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "champion", "expected"),
    [
        (0.40, None, True),  # no champion yet
        (0.61, 0.60, True),  # strictly better
        (0.60, 0.60, False),  # a tie keeps the incumbent
        (0.59, 0.60, False),
        (math.nan, None, False),  # a NaN model never wins
        (0.10, math.nan, True),  # a NaN champion loses to any number
    ],
)
def test_champion_gate(new, champion, expected):
    champion_metrics = None if champion is None else {"macro_f1": champion}
    assert champion_gate({"macro_f1": new}, champion_metrics) is expected


def test_champion_gate_uses_the_named_metric():
    assert champion_gate({"macro_f1": 0.1, "accuracy": 0.9}, {"macro_f1": 0.5, "accuracy": 0.8}, "accuracy")
    assert not champion_gate({"macro_f1": 0.1, "accuracy": 0.9}, {"macro_f1": 0.5, "accuracy": 0.8})


def test_champion_gate_names_the_missing_metric():
    with pytest.raises(ConfigError, match=r"no 'macro_f1'.*accuracy"):
        champion_gate({"accuracy": 0.9}, None)
    with pytest.raises(ConfigError, match="not a number"):
        champion_gate({"macro_f1": "high"}, None)


def test_champion_without_the_metric_is_not_replaced_blindly(caplog):
    assert champion_gate({"macro_f1": 0.9}, {"accuracy": 0.1}) is False
    assert "promote it by hand" in caplog.text


# ---- registering -------------------------------------------------------------------


def test_first_version_is_champion_and_default(registry, tmp_path):
    v1 = register(registry, tmp_path, 0.50)
    assert (v1.name, v1.version, v1.aliases, v1.is_default) == ("fer", 1, (CHAMPION,), True)
    assert (v1.path / "model.keras").read_text() == "weights 1"
    assert v1.path == registry.root / "fer" / "1"
    assert v1.labels == LABELS and v1.description == "run 1" and v1.metrics["macro_f1"] == 0.50


def test_worse_versions_become_challenger_and_the_alias_moves(registry, tmp_path):
    register(registry, tmp_path, 0.50)
    v2 = register(registry, tmp_path, 0.40)
    assert v2.aliases == (CHALLENGER,) and not v2.is_default
    v3 = register(registry, tmp_path, 0.50)  # a tie is not a win
    assert v3.aliases == (CHALLENGER,)

    by_version = {v.version: v for v in registry.list("fer")}
    assert by_version[1].aliases == (CHAMPION,) and by_version[1].is_default
    assert by_version[2].aliases == ()  # moved to v3, not copied
    assert registry.resolve("fer@challenger").version == 3


def test_better_version_takes_champion_and_default(registry, tmp_path):
    register(registry, tmp_path, 0.50)
    register(registry, tmp_path, 0.40)
    v3 = register(registry, tmp_path, 0.70)
    assert v3.aliases == (CHAMPION,) and v3.is_default

    by_version = {v.version: v for v in registry.list()}
    assert by_version[1].aliases == () and not by_version[1].is_default
    assert by_version[2].aliases == (CHALLENGER,)  # the challenger alias stays where it was
    assert registry.resolve("fer").version == 3
    assert registry.champion("fer").version == 3


def test_the_registered_copy_does_not_follow_later_changes(registry, tmp_path):
    v1 = register(registry, tmp_path, 0.50)
    (tmp_path / "trained-1" / "model.keras").write_text("overwritten by the next run")
    assert (v1.path / "model.keras").read_text() == "weights 1"


def test_a_single_model_file_can_be_registered(registry, tmp_path):
    model_file = tmp_path / "exported.keras"
    model_file.write_text("weights")
    version = registry.register("fer", model_file, {"macro_f1": 0.3}, labels={}, description="")
    assert (version.path / "exported.keras").read_text() == "weights"


def test_index_survives_a_new_registry_object(registry, tmp_path):
    register(registry, tmp_path, 0.50)
    register(registry, tmp_path, 0.60)
    reopened = LocalRegistry(registry.root)
    assert [(v.version, v.aliases) for v in reopened.list()] == [(1, ()), (2, (CHAMPION,))]
    index = json.loads((registry.root / INDEX_FILE).read_text())
    assert index["models"]["fer"]["aliases"] == {CHAMPION: 2}


def test_failed_index_write_leaves_the_old_index_and_no_temp_files(registry, tmp_path, monkeypatch):
    register(registry, tmp_path, 0.50)
    before = (registry.root / INDEX_FILE).read_text()

    real_replace = os.replace

    def fail_on_index(src, dst):
        if str(dst).endswith(INDEX_FILE):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_index)
    with pytest.raises(OSError, match="disk full"):
        register(registry, tmp_path, 0.90)
    assert (registry.root / INDEX_FILE).read_text() == before
    assert not [p for p in registry.root.iterdir() if p.name.startswith(f".{INDEX_FILE}")]
    monkeypatch.setattr(os, "replace", real_replace)
    # The next registration reuses the version number the failed one never published.
    assert register(registry, tmp_path, 0.90).version == 2


def test_register_checks_its_inputs_before_copying(registry, tmp_path):
    with pytest.raises(ConfigError, match="no 'macro_f1'"):
        registry.register("fer", make_model_dir(tmp_path, "x"), {"accuracy": 0.9}, labels={}, description="")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register("fer", tmp_path / "missing", {"macro_f1": 0.9}, labels={}, description="")
    with pytest.raises(RegistryError, match="invalid"):
        registry.register("fer@2", make_model_dir(tmp_path, "y"), {"macro_f1": 0.9}, labels={}, description="")
    assert not (registry.root / "fer").exists()


def test_set_alias_moves_champion_by_hand(registry, tmp_path):
    register(registry, tmp_path, 0.50)
    register(registry, tmp_path, 0.40)
    promoted = registry.set_alias("fer@challenger", CHAMPION)
    assert promoted.version == 2 and promoted.is_default and set(promoted.aliases) == {CHAMPION, CHALLENGER}
    assert registry.resolve("fer@1").aliases == ()


# ---- resolving ---------------------------------------------------------------------


def test_resolve_by_name_alias_and_version(registry, tmp_path):
    register(registry, tmp_path, 0.50)
    register(registry, tmp_path, 0.40)
    assert registry.resolve("fer").version == 1
    assert registry.resolve("fer@champion").version == 1
    assert registry.resolve("fer@challenger").version == 2
    assert registry.resolve("fer@2").ref == "fer@2"


def test_resolve_errors_list_what_exists(registry, tmp_path):
    with pytest.raises(RegistryError, match="registered: none yet"):
        registry.resolve("fer")
    register(registry, tmp_path, 0.50)
    with pytest.raises(RegistryError, match=r"No model named 'other'.*registered: fer"):
        registry.resolve("other@champion")
    with pytest.raises(RegistryError, match=r"no alias 'challenger'; its aliases: champion \(v1\)"):
        registry.resolve("fer@challenger")
    with pytest.raises(RegistryError, match="no version 7; its versions: 1"):
        registry.resolve("fer@7")
    with pytest.raises(RegistryError, match="malformed"):
        registry.resolve("fer@")
    with pytest.raises(RegistryError, match="No model named 'nope'"):
        registry.list("nope")


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_REGISTRY", str(tmp_path / "elsewhere"))
    assert default_registry_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("FER_REGISTRY")
    assert default_registry_root() == Path("build/registry")


# ---- `models list` / `models show` -----------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fer-pipeline")
    cli_models.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_models_list_and_show(registry, tmp_path, capsys):
    register(registry, tmp_path, 0.50)
    register(registry, tmp_path, 0.40)

    assert run_cli(["models", "list", "--registry", str(registry.root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["MODEL", "ALIASES", "METRIC", "VALUE"]
    assert table[1].split()[:4] == ["fer@1", "champion,default", "macro_f1", "0.5000"]
    assert table[2].split()[:2] == ["fer@2", "challenger"]

    assert run_cli(["models", "list", "--json", "--registry", str(registry.root)]) == 0
    assert [v["ref"] for v in json.loads(capsys.readouterr().out)] == ["fer@1", "fer@2"]

    assert run_cli(["models", "show", "fer@challenger", "--registry", str(registry.root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and shown["path"] == str(registry.root / "fer" / "2")


def test_models_cli_reports_errors_without_a_traceback(registry, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_REGISTRY", str(registry.root))
    assert run_cli(["models", "list"]) == 0
    assert "No models registered" in capsys.readouterr().out
    assert run_cli(["models", "show", "fer@champion"]) == cli_models.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: No model named 'fer'") and "Traceback" not in err
