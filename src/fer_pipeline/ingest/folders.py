"""A Kaggle dataset as a folder tree: files and folders listed with shown names,
symlinks followed only inside the root, a checksum over the files' contents."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fer_pipeline.errors import DatasetError


def shown_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (names made on other systems arrive
    as surrogate escapes) become visible escapes, ``caf\\xe9.jpg``; valid names are unchanged."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _DirTree:
    """A directory tree: relative file and folder paths, file bytes by path.

    Symlinks are followed only while they stay inside the root; one that resolves
    outside it is refused, as is reading the same real folder twice (a link loop).
    """

    def __init__(self, root: Path):
        self.root = root
        self._real_root = root.resolve()
        self.files: list[str] = []
        self.dirs: list[str] = []
        self.skipped: list[tuple[str, str]] = []  # (path, reason): inputs ignored outright
        self._digests: dict[str, str] = {}
        self._paths: dict[str, Path] = {}  # shown name -> the file on disk
        self._scan(self._real_root, "", {self._real_root})

    def __enter__(self) -> _DirTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    @property
    def name(self) -> str:
        return self.root.name

    def _scan(self, folder: Path, prefix: str, visited: set[Path]) -> None:
        """Collect files and folders below ``folder``, checking every symlink."""
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            relative = prefix + shown_name(entry.name)
            if entry.is_symlink():
                self._check_link(Path(entry.path), relative)
            if entry.is_dir():
                real = Path(entry.path).resolve()
                if real in visited:
                    self.skipped.append((relative, "symlink loop: folder already read"))
                    continue
                self.dirs.append(relative)
                self._scan(real, relative + "/", visited | {real})
            elif entry.is_file():
                self.files.append(relative)
                self._paths[relative] = Path(entry.path)
            else:
                self.skipped.append((relative, "not a regular file (broken link, socket or device)"))

    def _check_link(self, link: Path, relative: str) -> None:
        """Refuse a symlink whose target lies outside the dataset root."""
        target = link.resolve()
        if not target.is_relative_to(self._real_root):
            raise DatasetError(
                f"{self.root / relative} is a symlink to {target}, outside the dataset folder {self.root}; "
                "refusing to follow it. Copy the file into the folder or remove the link."
            )

    def read(self, relative: str) -> bytes:
        """Bytes of one file; remembers its digest for the checksum."""
        data = self._paths[relative].read_bytes()
        self._digests[relative] = hashlib.sha256(data).hexdigest()
        return data

    def checksum(self) -> str:
        """SHA-256 over sorted (relative path, file SHA-256) pairs."""
        total = hashlib.sha256()
        for relative in sorted(self.files):
            if relative not in self._digests:
                try:
                    self.read(relative)
                except OSError as exc:
                    raise DatasetError(
                        f"Cannot read {self.root / relative} ({exc}); fix its permissions or remove it."
                    ) from None
            total.update(f"{relative}\0{self._digests[relative]}\n".encode())
        return total.hexdigest()
