"""Exceptions that carry a message meant for the user: what is wrong, where, and the fix.

Each carries the exit code the CLI ends with (documented in `fer-pipeline --help`):
1 = an input (dataset, photo, registry or run index) is unusable as it is;
2 = the command line or configuration is wrong (a value, an option, a name);
3 = `fer-pipeline monitor` found drift (not an error: the command worked and says so).
"""

from collections.abc import Callable

EXIT_UNUSABLE_INPUT = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3


class FerError(Exception):
    """Base class for errors the CLI prints in one line, without a traceback."""

    exit_code = EXIT_USAGE


class DatasetError(FerError):
    """The input data cannot be used as given."""

    exit_code = EXIT_UNUSABLE_INPUT


class ConfigError(FerError):
    """A parameter or setting is missing or out of range."""


class UnusableFileError(FerError):
    """A file the command reads (an index, a photo) is damaged or of the wrong shape."""

    exit_code = EXIT_UNUSABLE_INPUT


def read_json_file(path, what: str):
    """The JSON document in ``path``; UnusableFileError naming the file and ``what`` it
    should be when it is missing, unreadable or not JSON."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UnusableFileError(f"{path} does not exist; pass {what}.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise UnusableFileError(f"{path} is not {what} ({exc}).") from None


RESTORE = "fix that field, restore the file from a backup, or move it away to start a new one"
_PLAIN = {
    "missing": "a required field is missing",
    "model_type": "expected a JSON object",
    "dict_type": "expected a JSON object",
    "list_type": "expected a JSON list",
    "float_type": "expected a number",
    "int_type": "expected a whole number",
    "string_type": "expected a string",
}


def check_shape(shape, data, path, what: str, error: type[FerError], *, name_of=None, advice: str = RESTORE) -> None:
    """Raise ``error`` naming ``path`` and the first misplaced field (with the value found)
    when ``data``, read from a JSON file, is not the pydantic model ``shape``.

    ``name_of`` may name the entry the field is in, given the field's location (a run by
    its run_id); ``advice`` ends the message with the fix.
    """
    from pydantic import ValidationError

    try:
        shape.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        named = name_of(first["loc"]) if name_of else None
        problem = _PLAIN.get(first["type"], first["msg"].lower())
        if first["type"] == "greater_than_equal":
            problem = f"expected {first['ctx']['ge']} or more"
        if first["type"] not in ("missing", "model_type"):
            found = repr(first.get("input"))
            problem += f", not {found if len(found) <= 40 else found[:37] + '...'}"
        raise error(
            f"{path} is valid JSON but not {what}: at {where}{f' ({named})' if named else ''}, {problem} "
            f"({exc.error_count()} problem(s)); {advice}."
        ) from None


def exit_in_one_line(main: Callable[[], int | None]) -> int:
    """Run a script's ``main`` (the benchmarks') to its exit code. A FerError or a missing
    file ends it as ``fer-pipeline`` ends: one line on stderr and the error's exit code,
    not a traceback."""
    import sys

    try:
        return int(main() or 0)
    except FerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FileNotFoundError as exc:
        print(f"error: {exc.filename} does not exist." if exc.filename else f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE_INPUT
