"""bench/hostile_inputs.py's scan, in-process: every subcommand refuses each hostile
input in one line with exit 1 or 2, raises nothing, and writes nothing."""

from __future__ import annotations

import json

import pytest

from bench.hostile_inputs import CASES, argv_for, check, make_inputs, snapshot
from fer_pipeline import cli


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    made = make_inputs(tmp_path_factory.mktemp("hostile") / "inputs")
    (made["root"] / "ok.json").write_text(json.dumps({"accuracy": 0.5, "macro_f1": 0.4}))
    return made


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_subcommand_refuses_a_hostile_input_cleanly(made, tmp_path, capsys, case):
    out = tmp_path / "out"
    before = snapshot(made["root"])
    try:
        code = cli.main(argv_for(case, made, out))
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    err = capsys.readouterr().err
    assert check(case, code, err, before, snapshot(made["root"]), out) == [], err[-500:]


def test_the_scan_covers_every_subcommand():
    parser = cli.build_parser()
    commands = {a for action in parser._subparsers._group_actions for a in action.choices}
    scanned = {case.argv[0] for case in CASES}
    assert commands <= scanned, f"no hostile case for {sorted(commands - scanned)}"
