"""Run indexes, registries and `register`'s options that cannot be used are refused in one
line naming the file, value or option, with the documented exit code, before any work and
without writing anything: a metric that is not a number, a negative -n, a file where a folder
belongs (and the reverse), a dangling alias, a label that is not KEY=VALUE, a bad model
name, a metrics file without the primary metric, `--registry vertex`, an unwritable registry."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from fer_pipeline import cli, runs
from fer_pipeline.registry import LocalRegistry, RegistryError, RegistryFileError


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main([str(part) for part in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err.strip()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------ run index
def write_index(path: Path, run_list: list[dict]) -> Path:
    path.write_text(json.dumps({"format_version": 1, "runs": run_list}))
    return path


GOOD_RUN = {"run_id": "good", "metrics": {"accuracy": 0.5, "macro_f1": 0.4, "per_class_f1": {"happy": 0.9}}}


@pytest.mark.parametrize(
    "metrics, where, value",
    [
        ({"accuracy": "high"}, "runs.1.metrics.accuracy", "'high'"),
        ({"log_loss": True}, "runs.1.metrics.log_loss", "True"),
        ({"per_class_f1": {"happy": "0.9"}}, "runs.1.metrics.per_class_f1.happy", "'0.9'"),
        ({"per_class_f1": [0.9]}, "runs.1.metrics.per_class_f1", "[0.9]"),
        ({"macro_f1": {"value": 0.4}}, "runs.1.metrics.macro_f1", "{'value': 0.4}"),
    ],
)
@pytest.mark.parametrize("command", [["compare", "-n", "0"], ["compare"], ["list"]])
def test_a_metric_that_is_not_a_number_is_refused_naming_the_file_run_and_metric(
    tmp_path, capsys, metrics, where, value, command
):
    index = write_index(tmp_path / "runs.json", [GOOD_RUN, {"run_id": "bad-run", "metrics": metrics}])
    before = index.read_bytes()
    code, out, err = run_cli(capsys, ["runs", *command, "--index", index])
    line = one_error_line(err)
    assert code == 1 and out == ""
    assert str(index) in line and where in line and "run 'bad-run'" in line and value in line
    assert "expected a number" in line or "expected a JSON object" in line
    assert index.read_bytes() == before


def test_metrics_that_are_numbers_or_null_still_compare(tmp_path, capsys):
    other = {"run_id": "other", "metrics": {"accuracy": 1, "macro_f1": None, "per_class_f1": {"happy": None}}}
    index = write_index(tmp_path / "runs.json", [GOOD_RUN, other])
    code, out, _ = run_cli(capsys, ["runs", "compare", "--index", index, "-n", "0"])
    assert code == 0 and "2 run(s)" in out and "1.0000" in out and "n/a" in out


def test_the_index_the_project_writes_passes_the_metric_types(tmp_path):
    index = runs.RunIndex(tmp_path / "runs.json")
    metrics = {"accuracy": 0.5, "macro_f1": 0.4, "log_loss": 1.2, "num_test_samples": 10}
    metrics["per_class"] = {"happy": {"f1": 0.7}}
    index.append(runs.run_record(run_id="r1", kind="cli", params={"seed": 1}, metrics=metrics))
    assert index.records()[0]["metrics"]["per_class_f1"]["happy"] == 0.7


@pytest.mark.parametrize("n", ["-1", "-2"])
def test_a_negative_n_is_refused_naming_the_option(tmp_path, capsys, n):
    index = write_index(tmp_path / "runs.json", [GOOD_RUN, {**GOOD_RUN, "run_id": "second"}])
    code, out, err = run_cli(capsys, ["runs", "compare", "--index", index, "-n", n])
    line = one_error_line(err)
    assert code == 2 and out == "" and f"-n {n}" in line and "0 for all" in line


def test_n_zero_compares_every_run_and_help_says_so(tmp_path, capsys):
    index = write_index(tmp_path / "runs.json", [{**GOOD_RUN, "run_id": f"r{i}"} for i in range(3)])
    code, out, _ = run_cli(capsys, ["runs", "compare", "--index", index, "-n", "0"])
    assert code == 0 and out.startswith("3 run(s)")
    code, out, _ = run_cli(capsys, ["runs", "compare", "--index", index])
    assert code == 0 and out.startswith("2 run(s)")
    with pytest.raises(SystemExit):
        cli.main(["runs", "compare", "--help"])
    assert "0 = all" in " ".join(capsys.readouterr().out.split())


def test_n_with_run_is_refused_rather_than_ignored(tmp_path, capsys):
    index = write_index(tmp_path / "runs.json", [GOOD_RUN])
    code, _, err = run_cli(capsys, ["runs", "compare", "--index", index, "-n", "1", "--run", "good"])
    assert code == 2 and "-n and --run" in one_error_line(err)


@pytest.mark.parametrize("command", [["list"], ["compare"]])
def test_a_folder_as_the_run_index_is_refused(tmp_path, capsys, command):
    folder = tmp_path / "adir"
    folder.mkdir()
    code, out, err = run_cli(capsys, ["runs", *command, "--index", folder])
    line = one_error_line(err)
    assert code == 2 and out == "" and str(folder) in line and "is a folder" in line and "a file" in line
    assert list(folder.iterdir()) == []
    with pytest.raises(runs.RunIndexError, match="is a folder"):
        runs.RunIndex(folder).append({"run_id": "r"})
    assert list(folder.iterdir()) == []


def test_an_absent_default_run_index_is_still_an_empty_one(tmp_path, capsys, monkeypatch):
    """Before the first recorded run there is no index yet; one named with --index must exist."""
    monkeypatch.setenv("FER_RUNS", str(tmp_path / "absent.json"))
    code, out, _ = run_cli(capsys, ["runs", "list"])
    assert code == 0 and "No runs recorded" in out
    code, out, err = run_cli(capsys, ["runs", "list", "--index", tmp_path / "typo.json"])
    assert code == 2 and out == "" and "does not exist" in one_error_line(err)


# ------------------------------------------------------------------ registry: file, dangling alias
def test_a_file_as_the_registry_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a registry")
    for command in (["models", "list"], ["models", "show", "fer-emotion"]):
        code, out, err = run_cli(capsys, [*command, "--registry", afile])
        line = one_error_line(err)
        assert code == 2 and out == "" and str(afile) in line and "is a file" in line and "folder" in line
    assert afile.read_text() == "not a registry"


def dangling_registry(root: Path) -> Path:
    (root / "fer-emotion" / "1").mkdir(parents=True)
    version = {
        "version": 1,
        "path": "fer-emotion/1",
        "metrics": {"macro_f1": 0.5},
        "labels": {},
        "description": "first",
        "primary_metric": "macro_f1",
    }
    model = {"versions": [version], "aliases": {"champion": 7, "challenger": 1}, "default_version": 1}
    (root / "index.json").write_text(json.dumps({"format_version": 1, "models": {"fer-emotion": model}}))
    return root / "index.json"


def test_models_show_calls_a_dangling_alias_a_damaged_index(tmp_path, capsys):
    index = dangling_registry(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = run_cli(capsys, ["models", "show", "fer-emotion@champion", "--registry", tmp_path])
    line = one_error_line(err)
    assert code == 1 and out == ""
    assert str(index) in line and "'champion'" in line and "version 7" in line and "damaged" in line
    assert snapshot(tmp_path) == before
    with pytest.raises(RegistryFileError):
        LocalRegistry(tmp_path).champion("fer-emotion")
    # asking for a version that is not there is still the caller's mistake (exit 2)
    code, _, err = run_cli(capsys, ["models", "show", "fer-emotion@9", "--registry", tmp_path])
    assert code == 2 and "has no version 9" in one_error_line(err)


def test_models_list_shows_a_dangling_alias(tmp_path, capsys):
    index = dangling_registry(tmp_path)
    code, out, err = run_cli(capsys, ["models", "list", "--registry", tmp_path])
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("fer-emotion@7"))
    assert "champion" in row and "DANGLING" in row
    assert str(index) in err and "'champion'" in err and "version 7" in err
    code, out, err = run_cli(capsys, ["models", "list", "--registry", tmp_path, "--json"])
    assert code == 0 and [v["version"] for v in json.loads(out)] == [1]
    assert "version 7" in err and err.startswith("warning: ")
    assert LocalRegistry(tmp_path).dangling() == [("fer-emotion", "champion", 7)]


# ------------------------------------------------------------------ register
@pytest.fixture
def register_inputs(tmp_path, monkeypatch):
    """A model file, a good metrics file, and an export that fails the test if it runs:
    every refusal here must come before it."""

    def no_export(*args, **kwargs):
        raise AssertionError("the export ran before the inputs were checked")

    # in place of the module, so that TensorFlow is not imported for a test that never exports
    monkeypatch.setitem(sys.modules, "fer_pipeline.export", types.SimpleNamespace(export_serving_model=no_export))
    model = tmp_path / "model.keras"
    model.write_bytes(b"keras")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.6, "macro_f1": 0.5}))
    return model, metrics


def register(capsys, model, metrics, *extra) -> tuple[int, str, str]:
    return run_cli(capsys, ["register", "--model", model, "--metrics", metrics, *extra])


@pytest.mark.parametrize(
    "labels, named",
    [
        (["noequals"], "'noequals' is not KEY=VALUE"),
        (["ok=1", "=value"], "'=value' is not KEY=VALUE"),
        (["commit=a", "commit=b"], "commit is given twice"),
    ],
)
def test_a_label_that_is_not_key_value_is_refused_before_the_export(tmp_path, capsys, register_inputs, labels, named):
    model, metrics = register_inputs
    before = snapshot(tmp_path)
    code, out, err = register(
        capsys, model, metrics, "--registry", tmp_path / "registry", *[f"--label={label}" for label in labels]
    )
    line = one_error_line(err)
    assert code == 2 and out == "" and "--label" in line and named in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["", "a/b@c", "-lead", "x" * 129])
def test_a_bad_model_name_is_refused_before_the_export(tmp_path, capsys, register_inputs, name):
    model, metrics = register_inputs
    before = snapshot(tmp_path)
    code, out, err = register(capsys, model, metrics, "--registry", tmp_path / "registry", f"--name={name}")
    line = one_error_line(err)
    assert code == 2 and out == "" and "--name" in line and repr(name)[:40] in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "document, named",
    [
        ({"train": [1, 2], "val": [3]}, "has no 'macro_f1'"),  # a split file
        ({"macro_f1": "0.5"}, "'macro_f1' is '0.5', not a number"),
        ({"macro_f1": 0.5, "accuracy": None}, "'accuracy' is None, not a number"),
        ([0.5], "not a JSON object"),
        ({"macro_f1": float("nan")}, "'macro_f1' is nan, not a score from 0 to 1"),  # json.dumps writes NaN
        ({"macro_f1": 1.5}, "'macro_f1' is 1.5, not a score from 0 to 1"),
        ({"macro_f1": 0.5, "accuracy": -0.1}, "'accuracy' is -0.1, not a score from 0 to 1"),
    ],
)
def test_a_metrics_file_without_the_primary_metric_is_an_unusable_input(
    tmp_path, capsys, register_inputs, document, named
):
    model, _ = register_inputs
    wrong = tmp_path / "split.json"
    wrong.write_text(json.dumps(document))
    before = snapshot(tmp_path)
    code, out, err = register(capsys, model, wrong, "--registry", tmp_path / "registry")
    line = one_error_line(err)
    assert code == 1 and out == "" and str(wrong) in line and named in line
    assert snapshot(tmp_path) == before


def test_a_model_that_is_not_a_keras_file_is_unusable_and_a_missing_one_a_wrong_option(
    tmp_path, capsys, register_inputs
):
    _, metrics = register_inputs
    table = tmp_path / "table.csv"
    table.write_text("a,b\n")
    before = snapshot(tmp_path)
    for model, exit_code, named in ((table, 1, "is not a .keras file"), (tmp_path / "gone.keras", 2, "does not exist")):
        code, out, err = register(capsys, model, metrics, "--registry", tmp_path / "registry")
        line = one_error_line(err)
        assert (code, out) == (exit_code, "") and str(model) in line and named in line
    assert snapshot(tmp_path) == before


def test_vertex_is_refused_with_how_to_register_there(tmp_path, capsys, register_inputs):
    model, metrics = register_inputs
    before = snapshot(tmp_path)
    code, out, err = register(capsys, model, metrics, "--registry", "vertex")
    line = one_error_line(err)
    assert code == 2 and "--registry vertex" in line and "make submit" in line
    assert snapshot(tmp_path) == before
    with pytest.raises(SystemExit):
        cli.main(["register", "--help"])
    assert '"vertex"' not in capsys.readouterr().out


def unwritable_registry(tmp_path: Path) -> str | None:
    """A path below a folder this user cannot make folders in, or None where there is none
    (root passes os.access everywhere; /sys refuses even root)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):
        return str(locked / "registry")
    return "/sys/fer-registry" if Path("/sys").is_dir() else None


@pytest.mark.parametrize("kind", ["a file", "below a file", "unwritable", "gs://", "empty"])
def test_a_registry_that_cannot_be_written_is_refused_before_the_export(tmp_path, capsys, register_inputs, kind):
    model, metrics = register_inputs
    afile = tmp_path / "afile"
    afile.write_text("x")
    path = {
        "a file": str(afile),
        "below a file": str(afile / "registry"),
        "unwritable": unwritable_registry(tmp_path),
        "gs://": "gs://bucket/registry",
        "empty": "",
    }[kind]
    if path is None:
        pytest.skip("no folder here refuses this user")
    before = snapshot(tmp_path)
    code, out, err = register(capsys, model, metrics, f"--registry={path}")
    line = one_error_line(err)
    assert code == 2 and out == "" and "--registry" in line and (path in line or kind == "empty")
    assert snapshot(tmp_path) == before
    if kind in ("a file", "below a file", "unwritable"):
        with pytest.raises(RegistryError):
            LocalRegistry(Path(path)).register("m", model, {"macro_f1": 0.5}, labels={}, description="d")
        assert snapshot(tmp_path) == before


def test_a_damaged_registry_index_is_refused_before_the_export(tmp_path, capsys, register_inputs):
    model, metrics = register_inputs
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "index.json").write_text("[]")
    before = snapshot(tmp_path)
    code, _, err = register(capsys, model, metrics, "--registry", tmp_path / "registry")
    assert code == 1 and "not a model registry index" in one_error_line(err)
    assert snapshot(tmp_path) == before


def test_good_inputs_reach_the_export(tmp_path, register_inputs):
    model, metrics = register_inputs
    with pytest.raises(AssertionError, match="the export ran"):
        cli.main(
            ["register", "--model", str(model), "--metrics", str(metrics), "--registry", str(tmp_path / "new" / "reg")]
            + ["--label", "commit=abc", "--label", "note=a=b", "--name", "fer.v2_x-1"]
        )
    assert not (tmp_path / "new").exists()


def test_the_pipelines_register_step_checks_the_metrics_before_the_export(register_inputs, tmp_path):
    """The register component calls steps.register_step directly, without the CLI's checks."""
    from fer_pipeline.errors import UnusableFileError
    from fer_pipeline.steps import register_step

    model, metrics = register_inputs
    metrics.write_text(json.dumps({"accuracy": 0.6}))
    with pytest.raises(UnusableFileError, match=r"metrics\.json has no 'macro_f1', the metric the champion gate"):
        register_step(model, metrics, registry=str(tmp_path / "reg"), display_name="fer-emotion", labels={})
    assert not (tmp_path / "reg").exists()
