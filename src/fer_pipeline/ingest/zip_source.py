"""A Kaggle zip read in memory, entry by entry, never extracted: unsafe entry names
(zip-slip), links and duplicate names refuse the archive; an entry is inflated only within
the size and compression-ratio limits."""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from pathlib import Path

from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest.outcomes import _Rejected
from fer_pipeline.ingest.policies import IngestOptions

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_ENCRYPTED = 0x1  # general-purpose flag bit 0 of a zip entry


class _ZipTree:
    """A zip archive read in memory: entry names, and entry bytes by name. An entry is
    inflated only within the size and compression-ratio limits (archive bombs)."""

    def __init__(self, path: Path, options: IngestOptions = IngestOptions()):
        self.path = path
        self.max_bytes = options.max_member_bytes
        self.max_ratio = options.max_compression_ratio
        try:
            self._archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{path} is not a readable zip file ({exc}); download it again.") from None
        except UnicodeDecodeError as exc:  # an entry flagged UTF-8 whose name is not
            raise DatasetError(
                f"{path} has an entry name marked UTF-8 that is not valid UTF-8 ({exc.object[:60]!r}); "
                "re-create the archive (names without the UTF-8 flag are read as code page 437)."
            ) from None
        self.files: list[str] = []
        self.dirs: list[str] = []
        self.skipped: list[tuple[str, str]] = []  # (entry, reason): inputs ignored outright
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in self._archive.infolist():
            name = info.filename.replace("\\", "/")
            _refuse_unsafe_entry(name, path)
            _refuse_link_entry(info, name, self._archive, path)
            if name in self._infos:
                raise DatasetError(f"{path} holds two entries named {name!r}; re-create the archive.")
            self._infos[name] = info
            if info.is_dir():
                self.dirs.append(name)
                self.skipped.append((name, "directory entry"))
            else:
                self.files.append(name)
        _refuse_encrypted(self._archive, path)

    def __enter__(self) -> _ZipTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._archive.close()

    @property
    def name(self) -> str:
        return self.path.name

    def read(self, name: str) -> bytes:
        """Bytes of one entry; _Rejected, unread, when it would inflate past the limits
        (its declared size and ratio are checked first, then the bytes actually read)."""
        info = self._infos[name]
        if info.file_size > self.max_bytes:
            raise _Rejected(
                f"inflates to {info.file_size:,} bytes, over the {self.max_bytes:,}-byte limit "
                "(max_member_bytes); not read"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > self.max_ratio:
            raise _Rejected(
                f"compressed {ratio:,.0f}:1, over the {self.max_ratio:g}:1 limit "
                "(max_compression_ratio; an archive bomb?); not read"
            )
        with self._archive.open(info) as member:
            data = member.read(self.max_bytes + 1)  # a lying header cannot make it read more
        if len(data) > self.max_bytes:
            raise _Rejected(
                f"inflates past the {self.max_bytes:,}-byte limit (max_member_bytes) although its "
                f"header says {info.file_size:,}; not read"
            )
        return data

    def checksum(self) -> str:
        """SHA-256 of the archive file."""
        return _file_sha256(self.path)


def _refuse_unsafe_entry(name: str, archive: Path) -> None:
    """Refuse absolute entry names and ``..`` (zip-slip)."""
    if name.startswith("/") or _DRIVE_LETTER.match(name) or ".." in name.split("/"):
        raise DatasetError(
            f"{archive} holds the entry {name!r}, which points outside the archive (absolute path or '..'); "
            "refusing to read it. Re-create the archive with relative paths only."
        )


def _refuse_encrypted(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse an archive with password-protected entries: they cannot be read without it."""
    files = [info for info in archive.infolist() if not info.is_dir()]
    encrypted = sum(1 for info in files if info.flag_bits & _ENCRYPTED)
    if encrypted:
        share = "" if encrypted == len(files) else f" ({encrypted:,} of its {len(files):,} files)"
        raise DatasetError(f"{path} is password-protected{share}; re-create it without a password.")


def _refuse_link_entry(info: zipfile.ZipInfo, name: str, archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse symbolic links stored in a zip (Unix mode S_IFLNK): an extracting tool would follow them."""
    if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
        target = archive.read(info)[:200].decode(errors="replace")
        raise DatasetError(
            f"{path} holds the entry {name!r}, a symbolic link to {target!r}; refusing to read an archive with "
            "links (they can point outside the dataset). Re-create the archive with the files themselves."
        )


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
