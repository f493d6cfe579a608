"""Paths a command would write to are checked while its command line is parsed: a file
where a folder is needed, a folder where a file is needed, or a file in the way above
either is refused in one line naming the option, with exit 2 and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_pipeline import cli


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


CASES = {
    "ingest --out is a file": (["ingest", "{data}", "--out", "{file}"], "--out", "is a file, not a folder"),
    "run --out is a file": (
        ["run", "{data}", "--out", "{file}", "--weights", "none"],
        "--out",
        "is a file, not a folder",
    ),
    "train-frozen --out below a file": (
        ["train-frozen", "{data}", "--split", "{file}", "--out", "{file}/model"],
        "--out",
        "is a file, so nothing can be written below it",
    ),
    "evaluate --out is a file": (["evaluate", "{data}", "--model", "{file}", "--out", "{file}"], "--out", "is a file"),
    "split --out is a folder": (["split", "{data}", "--out", "{dir}"], "--out", "is a folder; give the path of a file"),
    "validate --json is a folder": (["validate", "{data}", "--json", "{dir}"], "--json", "is a folder"),
    "run --runs-index is a folder": (
        ["run", "{data}", "--out", "{dir}/out", "--runs-index", "{dir}"],
        "--runs-index",
        "is a folder",
    ),
    "predict --annotate is a file": (
        ["predict", "{file}", "{file}", "--annotate", "{file}"],
        "--annotate",
        "is a file, not a folder",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_unwritable_output_path_is_refused_before_any_work(tmp_path, capsys, name):
    argv, option, message = CASES[name]
    (tmp_path / "dir").mkdir()
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / "data").mkdir()
    places = {"data": tmp_path / "data", "file": tmp_path / "a-file", "dir": tmp_path / "dir"}
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([part.format(**places) for part in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"argument {option}" in err and message in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before
