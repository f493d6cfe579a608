"""argparse types for the paths a command writes: checked while the command line is
parsed, so a path that cannot be written fails in one line naming the option, before
any work (argparse exits 2)."""

from __future__ import annotations

import argparse
from pathlib import Path


def output_dir(value: str) -> Path:
    """A folder to write into: absent (it is made) or a folder, not a file."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value} is a file, not a folder; give a folder to write into (it is made if absent)"
        )
    _check_parent(path, value)
    return path


def output_file(value: str) -> Path:
    """A file to write: absent or a file (replaced), not a folder."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; give the path of a file to write")
    _check_parent(path, value)
    return path


def _check_parent(path: Path, value: str) -> None:
    """The nearest existing folder above ``path`` must be a folder (not a file)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{value}: {parent} is a file, so nothing can be written below it")
            return
