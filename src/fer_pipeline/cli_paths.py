"""argparse types for the paths a command writes: checked while the command line is
parsed, so a path that cannot be written fails in one line naming the option, before
any work (argparse exits 2)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fer_pipeline.files import nearest_existing, write_refusal


def given(value: str) -> str:
    """A path or URI to read, not empty (an empty one would mean the current folder)."""
    return _not_empty(value, "file or folder to read")


def given_path(value: str) -> Path:
    """``given``, as a Path."""
    return Path(given(value)).expanduser()


def output_dir(value: str) -> Path:
    """A folder to write into: absent (it is made) or a folder, not a file."""
    path = Path(_not_empty(value, "folder to write")).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value} is a file, not a folder; give a folder to write into (it is made if absent)"
        )
    _check_parent(path, value)
    return path


def output_file(value: str) -> Path:
    """A file to write: absent or a file (replaced), not a folder."""
    path = Path(_not_empty(value, "file to write")).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; give the path of a file to write")
    _check_parent(path, value)
    return path


def _not_empty(value: str, what: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError(f"an empty path; give the {what} (an empty one would be this folder)")
    return value


def _check_parent(path: Path, value: str) -> None:
    """The nearest existing folder above ``path`` must be a folder (not a file) this process can
    write into, and so must ``path`` itself where it exists."""
    existing = nearest_existing(path.absolute())
    if existing != path.absolute() and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {existing} is a file, so nothing can be written below it")
    _check_writable(existing, value)


def _check_writable(path: Path, value: str) -> None:
    folder = path if path.is_dir() else path.parent
    reason = write_refusal(folder)
    if reason is None and path.is_file() and not os.access(path, os.W_OK):
        reason = "Permission denied"
    if reason:
        raise argparse.ArgumentTypeError(f"{value}: cannot write to {path} ({reason}); choose a path you can write to")
