"""One error path for the CLI: an expected failure is one line on stderr and a documented
exit code (1: an input is unusable as it is; 2: the command line or configuration is
wrong); --debug shows the traceback instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_pipeline import cli
from fer_pipeline.errors import EXIT_UNUSABLE_INPUT, EXIT_USAGE, FerError


def broken_zip(tmp_path: Path) -> Path:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


def registry_with_a_bad_index(tmp_path: Path) -> Path:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "index.json").write_text("[]")
    return tmp_path / "registry"


def empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def run_index(tmp_path: Path, document) -> Path:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(document))
    return path


CASES = {
    # unusable inputs: 1
    "validate a damaged zip": (lambda t: ["validate", str(broken_zip(t))], EXIT_UNUSABLE_INPUT, "not a readable zip"),
    "ingest a damaged zip": (
        lambda t: ["ingest", str(broken_zip(t)), "--out", str(t / "ds")],
        EXIT_UNUSABLE_INPUT,
        "not a readable zip",
    ),
    "models list on a bad index": (
        lambda t: ["models", "list", "--registry", str(registry_with_a_bad_index(t))],
        EXIT_UNUSABLE_INPUT,
        "not a model registry index",
    ),
    "runs list on a bad index": (
        lambda t: ["runs", "list", "--index", str(run_index(t, {"format_version": 1, "runs": 3}))],
        EXIT_UNUSABLE_INPUT,
        "not a run index",
    ),
    # wrong values on the command line: 2
    "models show an unknown name": (
        lambda t: ["models", "show", "nope", "--registry", str(empty_folder(t / "empty"))],
        EXIT_USAGE,
        "No model named 'nope'",
    ),
    "models show in a registry folder that does not exist": (
        lambda t: ["models", "show", "nope", "--registry", str(t / "typo")],
        EXIT_UNUSABLE_INPUT,
        "(--registry) does not exist",
    ),
    "runs compare an unknown run": (
        lambda t: [
            "runs",
            "compare",
            "--index",
            str(run_index(t, {"format_version": 1, "runs": [{"run_id": "a"}, {"run_id": "b"}]})),
            "--run",
            "nope",
        ],
        EXIT_USAGE,
        "No run nope",
    ),
    "validate a missing source": (
        lambda t: ["validate", str(t / "nope.zip")],
        EXIT_USAGE,
        "does not exist",
    ),
    "ingest a missing source": (
        lambda t: ["ingest", str(t / "nope.zip"), "--out", str(t / "ds")],
        EXIT_USAGE,
        "does not exist",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_expected_failures_are_one_line_with_their_exit_code(tmp_path, capsys, name):
    make_argv, code, message = CASES[name]
    assert cli.main(make_argv(tmp_path)) == code
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "name", ["validate a damaged zip", "models list on a bad index", "runs compare an unknown run"]
)
def test_debug_shows_the_traceback_instead(tmp_path, name):
    make_argv, _, message = CASES[name]
    with pytest.raises(FerError, match=message):
        cli.main(["--debug", *make_argv(tmp_path)])


def test_a_write_the_system_refuses_mid_command_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """The parse-time probe cannot foresee every refusal (a disk filling up, a folder made
    read-only meanwhile): an OSError still ends in one line, exit 1, the path named."""
    import fer_pipeline.ingest as ingest

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ds" / "images.npz"))

    monkeypatch.setattr(ingest, "read_source", refused)
    assert cli.main(["validate", str(broken_zip(tmp_path))]) == EXIT_UNUSABLE_INPUT
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: {tmp_path / 'ds' / 'images.npz'}: Permission denied; check that path and its permissions (--debug shows where)"
    )
    with pytest.raises(PermissionError):
        cli.main(["--debug", "validate", str(broken_zip(tmp_path))])


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "Exit codes: 0 done; 1 an input" in out and "2 the command line or configuration is wrong" in out


def test_sigterm_unwinds_the_command_and_exits_143_in_one_line(tmp_path, capsys, monkeypatch):
    """SIGTERM (Vertex, Kubernetes, `kill`) runs the command's cleanup, as Ctrl-C does; the
    default handler would end the process where it stands."""
    import signal
    import tempfile

    left = []

    def validate_then_get_terminated(args):
        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            left.append(scratch)
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(cli, "cmd_validate", validate_then_get_terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["validate", str(tmp_path)]) == 143
    assert capsys.readouterr().err.strip() == "terminated"
    assert left and not Path(left[0]).exists()  # the command's temporary directory went
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the command's only
    with pytest.raises(cli.Terminated):
        cli.main(["--debug", "validate", str(tmp_path)])


def test_ctrl_c_exits_130_in_one_line_and_debug_keeps_the_traceback(tmp_path, capsys, monkeypatch):
    def validate_then_get_interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_validate", validate_then_get_interrupted)
    assert cli.main(["validate", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--debug", "validate", str(tmp_path)])


def test_a_reader_that_stops_reading_ends_the_command_quietly_with_141(tmp_path):
    """`fer-pipeline runs list | head`: the closed pipe is the reader's choice, not an error
    about a path and its permissions."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from fer_pipeline import cli\n"
        "def listing_into_a_closed_pipe(args):\n"
        "    print('a line still in the buffer')\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "cli.cmd_validate = listing_into_a_closed_pipe\n"
        f"sys.exit(cli.main(['validate', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141
    assert done.stderr == ""  # no error line, and no "Exception ignored" when Python flushes at exit


def test_validate_does_not_call_a_source_without_images_usable(tmp_path, capsys):
    header_only = tmp_path / "fer2013.csv"
    header_only.write_text("emotion,pixels,Usage\n")
    assert cli.main(["validate", str(header_only)]) == EXIT_UNUSABLE_INPUT
    captured = capsys.readouterr()
    assert "Usable: no (no images of train/angry" in captured.out and "Usable: yes" not in captured.out
    assert "dataset NOT usable" in captured.err


def test_a_wrong_option_is_one_line_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as refused:
        cli.main(["validate"])
    err = capsys.readouterr().err
    assert refused.value.code == EXIT_USAGE and "usage:" not in err
    assert (
        err == "fer-pipeline validate: error: the following arguments are required: path (--help lists the options)\n"
    )
