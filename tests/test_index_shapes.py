"""A registry index or run index that is valid JSON but the wrong shape is refused with
the file named and the first misplaced field, through the library and the CLI, and
nothing is written; the files the project writes itself still read."""

from __future__ import annotations

import json

import pytest

from fer_pipeline import cli, runs
from fer_pipeline.registry import LocalRegistry, RegistryError

WRONG_REGISTRIES = {
    "a list": ([], "at the top level, expected a JSON object"),
    "models as a list": ({"format_version": 1, "models": []}, "at models, expected a JSON object"),
    "a version without fields": (
        {"format_version": 1, "models": {"m": {"versions": [{"version": 1}], "aliases": {}, "default_version": 1}}},
        "at models.m.versions.0.path, a required field is missing",
    ),
    "an alias to a string": (
        {
            "format_version": 1,
            "models": {"m": {"versions": [], "aliases": {"champion": "one"}, "default_version": None}},
        },
        "at models.m.aliases.champion",
    ),
}
WRONG_RUN_INDEXES = {
    "a list": ([], "at the top level, expected a JSON object"),
    "runs as an object": ({"format_version": 1, "runs": {"a": 1}}, "at runs, expected a JSON list"),
    "a run that is a number": ({"format_version": 1, "runs": [3]}, "at runs.0, expected a JSON object"),
    "params as a list": ({"format_version": 1, "runs": [{"run_id": "a", "params": [1]}]}, "at runs.0.params"),
}


@pytest.mark.parametrize("name", sorted(WRONG_REGISTRIES))
def test_registry_index_of_the_wrong_shape_is_refused_by_name(tmp_path, name):
    document, where = WRONG_REGISTRIES[name]
    (tmp_path / "index.json").write_text(json.dumps(document))
    registry = LocalRegistry(tmp_path)
    for read in (registry.list, lambda: registry.resolve("m"), lambda: registry.champion("m")):
        with pytest.raises(RegistryError, match="not a model registry index") as info:
            read()
        assert str(tmp_path / "index.json") in str(info.value) and where in str(info.value)


@pytest.mark.parametrize("name", sorted(WRONG_RUN_INDEXES))
def test_run_index_of_the_wrong_shape_is_refused_by_name(tmp_path, name):
    document, where = WRONG_RUN_INDEXES[name]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(document))
    with pytest.raises(runs.RunIndexError, match="not a run index") as info:
        runs.RunIndex(path).records()
    assert str(path) in str(info.value) and where in str(info.value)
    before = path.read_bytes()
    with pytest.raises(runs.RunIndexError):
        runs.RunIndex(path).append({"run_id": "new"})
    assert path.read_bytes() == before  # a refused append writes nothing


@pytest.mark.parametrize(
    "command, document",
    [
        (["models", "list", "--registry", "{dir}"], WRONG_REGISTRIES["a version without fields"][0]),
        (["runs", "compare", "--index", "{dir}/runs.json"], WRONG_RUN_INDEXES["a run that is a number"][0]),
    ],
)
def test_cli_answers_a_wrong_shape_with_one_line_and_no_traceback(tmp_path, capsys, command, document):
    (tmp_path / ("index.json" if "models" in command else "runs.json")).write_text(json.dumps(document))
    code = cli.main([part.format(dir=tmp_path) for part in command])
    captured = capsys.readouterr()
    assert code != 0
    assert "Traceback" not in captured.err and "valid JSON but not" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_files_the_project_writes_still_read(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.keras").write_bytes(b"weights")
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(
        "m", model_dir, {"macro_f1": 0.5}, labels={"commit": "abc"}, description="run 1", primary_metric="macro_f1"
    )
    assert [v.version for v in registry.list()] == [1]
    index = runs.RunIndex(tmp_path / "runs.json")
    index.append(runs.run_record(run_id="r1", kind="kfp-local", params={"seed": 1}, metrics={"accuracy": 0.5}))
    assert [r["run_id"] for r in index.records()] == ["r1"]
