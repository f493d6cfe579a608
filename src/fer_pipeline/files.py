"""Local-file primitives every module shares: the Keras file's name, JSON written whole
(never half a file for a reader to find), and a lock that serialises writers of a shared
index (two local pipeline runs registering at once)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fer_pipeline.errors import FerError, UnusableFileError

MODEL_FILE = "model.keras"  # the Keras file inside every model folder and Model artifact


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(
    path: str | Path, data: Any, *, strict: bool = False, sort_keys: bool = False, indent: int | None = 2
) -> None:
    """Write ``data`` as indented JSON: to a temp file in the same folder, then ``os.replace``
    it over ``path``, so readers see the old file or the new one. ``strict`` refuses NaN
    and values JSON has no form for; otherwise they are written with ``str``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=not strict, default=None if strict else str)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode any new file gets, so a
        # file written by a container's user stays readable by the host's.
        with contextlib.suppress(OSError):  # best effort: Cloud Storage FUSE (/gcs on Vertex) has no modes
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def locked(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (made if missing) for the block."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; single-writer use only
        yield
        return
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); ValueError otherwise."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def write_refusal(folder: Path) -> str | None:
    """Why this process cannot create files in ``folder`` (the system's words), or None.
    Found by making and removing a probe file: ``os.access`` says yes to root everywhere,
    also where the file system says no (/sys, /proc, read-only mounts)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".fer-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent: where a folder that
    is made for ``path`` would be created."""
    return next(p for p in (path, *path.parents) if p.exists())


def resolve_keras_file(path: Path) -> Path:
    """Return the ``.keras`` file for ``path``: the file itself or ``<dir>/model.keras``.

    Raises:
        FerError: the path does not exist (exit 2, as for any missing path on a command line).
        UnusableFileError: it exists, but is neither (exit 1, an unusable input).
    """
    path = Path(path)
    if not path.exists():
        raise FerError(f"{path} does not exist; pass a training output folder or its {MODEL_FILE}.")
    if path.is_dir():
        candidate = path / MODEL_FILE
        if candidate.is_file():
            return candidate
        raise UnusableFileError(
            f"{path} has no {MODEL_FILE}; pass the training output folder or the .keras file itself."
        )
    if path.is_file() and path.suffix == ".keras":
        return path
    raise UnusableFileError(f"{path} is not a .keras file or a folder holding {MODEL_FILE}; check the path.")
