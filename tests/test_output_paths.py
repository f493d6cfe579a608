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
    "ingest --out is empty (would be this folder)": (["ingest", "{data}", "--out", ""], "--out", "an empty path"),
    "validate of an empty path": (["validate", ""], "path", "an empty path; give the file or folder to read"),
    "train-frozen --split is empty": (
        ["train-frozen", "{data}", "--split", "", "--out", "{dir}/m"],
        "--split",
        "an empty path",
    ),
    "ingest --out in a folder this user cannot write": (
        ["ingest", "{data}", "--out", "{locked}/ds"],
        "--out",
        "cannot write to",
    ),
    "validate --json in a folder this user cannot write": (
        ["validate", "{data}", "--json", "{locked}/r.json"],
        "--json",
        "cannot write to",
    ),
    "train-frozen --backup-dir is a file": (
        ["train-frozen", "{data}", "--split", "{file}", "--out", "{dir}/m", "--backup-dir", "{file}"],
        "--backup-dir",
        "is a file, not a folder",
    ),
    "predict --annotate is a file": (
        ["predict", "{file}", "{file}", "--annotate", "{file}"],
        "--annotate",
        "is a file, not a folder",
    ),
}


def locked_folder(tmp_path: Path, monkeypatch) -> Path:
    """A folder whose writes fail as a read-only one's do, for any user (root ignores mode bits)."""
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def refusing(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing)
    return locked


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_unwritable_output_path_is_refused_before_any_work(tmp_path, monkeypatch, capsys, name):
    argv, option, message = CASES[name]
    (tmp_path / "dir").mkdir()
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / "data").mkdir()
    places = {"data": tmp_path / "data", "file": tmp_path / "a-file", "dir": tmp_path / "dir"}
    places["locked"] = locked_folder(tmp_path, monkeypatch) if "{locked}" in " ".join(argv) else None
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([part.format(**places) for part in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"argument {option}" in err and message in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before
