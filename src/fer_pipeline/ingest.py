"""Read FER-2013 into the canonical dataset, validating every file on the way.

Three sources are understood:
  - the Kaggle zip (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), read in memory;
  - the same layout as a directory;
  - the original ``fer2013.csv`` (``emotion,pixels,Usage``, CSV class codes).
Zip and directory may hold the layout one folder down (``archive/train/...``).

Every input file or CSV row ends up in exactly one of four states, so that
``accepted + converted + rejected + ignored == given``:
  - accepted: a 48x48 grayscale JPEG/PNG (or a valid CSV row), used as is;
  - converted: another image made 48x48 grayscale (only with ``convert=True``);
  - rejected: unusable, with the reason (a strict ingest then fails);
  - ignored: OS junk (``__MACOSX/``, ``.DS_Store``, hidden files), directory entries,
    files outside ``train/`` and ``test/``, blank CSV lines.
Samples are keyed by their path relative to the dataset root (base names are not
unique in FER-2013) or ``<csv name>:<row>``, and sorted by key.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import re
import stat
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fer_pipeline.classes import CLASSES, CLASS_INDEX, CSV_CODE_TO_CLASS, IMAGE_SIZE
from fer_pipeline.dataset import FORMAT_VERSION, SPLITS, FerDataset, class_counts
from fer_pipeline.errors import ConfigError, DatasetError
from fer_pipeline.quality import DuplicateAnalysis, analyse_duplicates

logger = logging.getLogger("fer_pipeline.ingest")

ACCEPTED, CONVERTED, REJECTED, IGNORED = "accepted", "converted", "rejected", "ignored"
DUPLICATE_POLICIES = ("keep", "drop", "fail")
SOURCE_SPLITS = ("Training", "PublicTest", "PrivateTest")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}
CSV_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
AS_IS_FORMATS = ("JPEG", "PNG")
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
MAX_LISTED = 5  # file names quoted in one error message
_USAGE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_SOURCE_KINDS = "give a Kaggle .zip, its unpacked folder, or fer2013.csv"


@dataclass(frozen=True)
class IngestOptions:
    """How tolerant an ingest is.

    Attributes:
        convert: accept images that are not 48x48 grayscale JPEG/PNG by converting them
            (counted as "converted"); without it they are rejected.
        duplicate_policy: for groups of identical images with different labels: "keep",
            "drop" (remove every member) or "fail" (DatasetError).
        drop_leakage: drop train samples whose pixels are identical to a test sample.
        strict: any rejected file fails the ingest; False quarantines rejected files
            (listed in the report) and goes on without them.
        max_member_bytes: a zip entry that inflates to more than this is rejected
            before it is inflated (a FER-2013 image is about 2 KB; a camera JPEG a few MB).
        max_compression_ratio: a zip entry whose uncompressed size is more than this
            many times its compressed size is rejected unread (archive bombs reach
            1,000x and more; images barely compress).
    """

    convert: bool = False
    duplicate_policy: str = "keep"
    drop_leakage: bool = False
    strict: bool = True
    max_member_bytes: int = 64 * 2**20
    max_compression_ratio: float = 100.0

    def __post_init__(self) -> None:
        if self.duplicate_policy not in DUPLICATE_POLICIES:
            raise ConfigError(
                f"duplicate_policy must be one of {', '.join(DUPLICATE_POLICIES)}, "
                f"got {self.duplicate_policy!r}."
            )
        if self.max_member_bytes <= 0 or self.max_compression_ratio <= 1:
            raise ConfigError(
                "max_member_bytes must be > 0 and max_compression_ratio > 1, "
                f"got {self.max_member_bytes!r} and {self.max_compression_ratio!r}."
            )


@dataclass(frozen=True)
class FileIssue:
    """One input file or row that was not accepted as is, or a sample dropped later."""

    path: str
    status: str
    reason: str


@dataclass
class IngestReport:
    """What an ingest read, accepted, changed and found; ``to_dict`` is JSON-able.

    ``issues`` lists every converted, rejected and ignored input (path relative to the
    source, or ``<csv>:<row>``) and ``accepted_files`` every input used as is, so
    ``inputs()`` names each input once; ``dropped`` lists accepted samples removed afterwards by
    ``duplicate_policy="drop"`` or ``drop_leakage``. ``counts`` and
    ``source_split_counts`` describe the resulting dataset; ``duplicates`` and
    ``leakage`` describe the samples as read, before any drop.
    """

    source: str
    source_format: str
    source_sha256: str
    options: IngestOptions
    given: int
    accepted: int
    issues: list[FileIssue] = field(default_factory=list)
    dropped: list[FileIssue] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    source_split_counts: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    leakage: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    accepted_files: list[str] = field(default_factory=list)  # every input used as is, sorted

    def _count(self, status: str) -> int:
        """Number of issues with one status."""
        return sum(1 for issue in self.issues if issue.status == status)

    @property
    def converted(self) -> int:
        return self._count(CONVERTED)

    @property
    def rejected(self) -> int:
        return self._count(REJECTED)

    @property
    def ignored(self) -> int:
        return self._count(IGNORED)

    @property
    def usable(self) -> bool:
        """True when no file was rejected, i.e. a strict ingest accepts the source as is.

        With ``strict=False`` an ingest returns a dataset of the good files even when
        this is False; ``fer-pipeline validate`` should report the source as not usable.
        """
        return self.rejected == 0

    def inputs(self) -> list[FileIssue]:
        """Every input file (or CSV row) once, with its status and, unless accepted, the reason."""
        accepted = [FileIssue(path, ACCEPTED, "") for path in self.accepted_files]
        return sorted(accepted + self.issues, key=lambda i: i.path)

    def status_counts(self) -> dict[str, int]:
        """Inputs per status; they add up to ``given``."""
        return {
            ACCEPTED: self.accepted,
            CONVERTED: self.converted,
            REJECTED: self.rejected,
            IGNORED: self.ignored,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain JSON-able values."""
        return {
            "source": self.source,
            "source_format": self.source_format,
            "source_sha256": self.source_sha256,
            "options": dataclasses.asdict(self.options),
            "usable": self.usable,
            "files": {"given": self.given, **self.status_counts()},
            "counts": self.counts,
            "source_split_counts": self.source_split_counts,
            "duplicates": self.duplicates,
            "leakage": self.leakage,
            "issues": [dataclasses.asdict(issue) for issue in self.issues],
            "accepted_files": list(self.accepted_files),
            "dropped": [dataclasses.asdict(issue) for issue in self.dropped],
            "warnings": list(self.warnings),
        }

    def summary_text(self, max_listed: int = 20) -> str:
        """A multi-line human-readable summary, as ``fer-pipeline validate`` prints it."""
        lines = [
            f"Source: {self.source} ({self.source_format}, sha256 {self.source_sha256})",
            "",
            *_counts_table(self.counts),
            "",
            "Original usage: " + ", ".join(f"{name} {n:,}" for name, n in self.source_split_counts.items()),
            f"Files: {self.given:,} given: "
            + ", ".join(f"{n:,} {status}" for status, n in self.status_counts().items()),
            *_ignored_breakdown(self.issues),
            *_duplicate_lines(self.duplicates, self.leakage, self.options),
        ]
        lines += _issue_lines("Rejected", [i for i in self.issues if i.status == REJECTED], max_listed)
        lines += _issue_lines("Converted", [i for i in self.issues if i.status == CONVERTED], max_listed)
        lines += _issue_lines("Dropped", self.dropped, max_listed)
        if self.warnings:
            lines += ["Warnings:", *(f"  - {w}" for w in self.warnings)]
        verdict = "yes" if self.usable else f"no ({self.rejected:,} file(s) rejected)"
        lines.append(f"Usable: {verdict}")
        return "\n".join(lines)


@dataclass
class IngestResult:
    """The canonical dataset (manifest filled in) and the report of how it was made."""

    dataset: FerDataset
    report: IngestReport


class IngestError(DatasetError):
    """An ingest refused the data after reading it; ``report`` says what was found."""

    def __init__(self, message: str, report: IngestReport):
        super().__init__(message)
        self.report = report


class _Rejected(Exception):
    """One file or row cannot be used; the message is the reason."""


# ---------------------------------------------------------------------------
# Public entry points


def read_source(path: str | Path, options: IngestOptions = IngestOptions()) -> IngestResult:
    """Read a Kaggle zip, Kaggle folder tree or fer2013.csv into the canonical dataset.

    Args:
        path: a ``.zip`` file, a directory, or a ``.csv`` file.
        options: how to treat odd images, duplicates, leakage and rejected files.

    Returns:
        The dataset, sorted by key with its manifest filled in, and the ingest report.

    Raises:
        DatasetError: the source is missing, of an unknown kind, or laid out wrongly
            (classes, splits, columns, unsafe paths); or, as ``IngestError`` carrying the
            report, files were rejected under ``strict``, a class ended up empty, or
            ``duplicate_policy="fail"`` met identical images with different labels.
    """
    path = Path(path)
    started = time.monotonic()
    source_format = detect_format(path)
    logger.info("reading %s (%s)", path, source_format)
    if source_format == "fer2013-csv":
        collected = _read_csv(path)
        checksum = source_checksum(path)
    else:
        tree = _ZipTree(path, options) if source_format == "kaggle-zip" else _DirTree(path)
        with tree:
            collected = _read_tree(tree, options)
            checksum = tree.checksum()
    result = _finish(path, source_format, checksum, collected, options)
    logger.info(
        "read %d samples from %s in %.1f s", len(result.dataset), path.name, time.monotonic() - started
    )
    return result


def source_checksum(path: str | Path) -> str:
    """SHA-256 (hex) identifying a source.

    For a file (zip or csv) it is the hash of its bytes. For a directory it is the hash
    over its files' sorted ``(relative path, sha256 of file)`` pairs, so it does not
    depend on timestamps or on the order the file system lists them in.
    """
    path = Path(path)
    if path.is_dir():
        with _DirTree(path) as tree:
            return tree.checksum()
    return _file_sha256(path)


def detect_format(path: Path) -> str:
    """"kaggle-zip", "kaggle-dir" or "fer2013-csv", from what ``path`` is."""
    if path.is_dir():
        return "kaggle-dir"
    if not path.is_file():
        raise DatasetError(f"Dataset source {path} does not exist; {_SOURCE_KINDS}.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "fer2013-csv"
    if suffix == ".zip" or zipfile.is_zipfile(path):
        return "kaggle-zip"
    raise DatasetError(
        f"Cannot tell what {path} is (suffix {path.suffix!r}); {_SOURCE_KINDS}."
    )


def decode_image(data: bytes, convert: bool) -> tuple[np.ndarray, str | None]:
    """Decode one image file to (48, 48) uint8.

    Args:
        data: the file's bytes.
        convert: make other sizes, modes and formats 48x48 grayscale instead of refusing them.

    Returns:
        The pixels and, when the image was converted, a note saying from what.

    Raises:
        _Rejected: the bytes are empty, not an image, corrupt, or need ``convert``.
    """
    if not data:
        raise _Rejected("empty file (0 bytes)")
    image = _open_image(data)
    try:
        image.load()
    except Exception as exc:  # truncated or damaged data, decompression bombs
        raise _Rejected(f"corrupt {image.format} image: {exc}") from None
    width, height = image.size
    if image.format in AS_IS_FORMATS and image.mode == "L" and image.size == (IMAGE_SIZE, IMAGE_SIZE):
        return np.asarray(image, dtype=np.uint8), None
    described = f"{image.format} {image.mode} {width}x{height}"
    if not convert:
        raise _Rejected(
            f"{described} image, expected {IMAGE_SIZE}x{IMAGE_SIZE} grayscale (mode L) JPEG or PNG; "
            "ingest with convert=True to convert it"
        )
    return _to_canonical(image), f"converted from {described}"


# ---------------------------------------------------------------------------
# Collecting samples and outcomes


@dataclass
class _Collected:
    """Samples and per-input outcomes gathered while reading a source."""

    keys: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    source_splits: list[str] = field(default_factory=list)
    issues: list[FileIssue] = field(default_factory=list)
    given: int = 0
    accepted: int = 0
    accepted_names: list[str] = field(default_factory=list)  # input names (not keys) of the accepted
    warnings: list[str] = field(default_factory=list)

    def add(self, key: str, image: np.ndarray, label: int, split: str, source_split: str) -> None:
        """Record one usable sample."""
        self.keys.append(key)
        self.images.append(image)
        self.labels.append(label)
        self.splits.append(split)
        self.source_splits.append(source_split)

    def issue(self, path: str, status: str, reason: str) -> None:
        """Record an input that was converted, rejected or ignored."""
        self.issues.append(FileIssue(path, status, reason))


# ---------------------------------------------------------------------------
# Kaggle layout: zip and directory


class _ZipTree:
    """A zip archive read in memory: entry names, and entry bytes by name. An entry is
    inflated only within the size and compression-ratio limits (archive bombs)."""

    def __init__(self, path: Path, options: "IngestOptions" = IngestOptions()):
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

    def __enter__(self) -> "_ZipTree":
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
            raise _Rejected(f"inflates to {info.file_size:,} bytes, over the {self.max_bytes:,}-byte limit "
                            "(max_member_bytes); not read")
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > self.max_ratio:
            raise _Rejected(f"compressed {ratio:,.0f}:1, over the {self.max_ratio:g}:1 limit "
                            "(max_compression_ratio; an archive bomb?); not read")
        with self._archive.open(info) as member:
            data = member.read(self.max_bytes + 1)  # a lying header cannot make it read more
        if len(data) > self.max_bytes:
            raise _Rejected(f"inflates past the {self.max_bytes:,}-byte limit (max_member_bytes) although its "
                            f"header says {info.file_size:,}; not read")
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


def _refuse_link_entry(info: zipfile.ZipInfo, name: str, archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse symbolic links stored in a zip (Unix mode S_IFLNK): an extracting tool would follow them."""
    if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
        target = archive.read(info)[:200].decode(errors="replace")
        raise DatasetError(
            f"{path} holds the entry {name!r}, a symbolic link to {target!r}; refusing to read an archive with "
            "links (they can point outside the dataset). Re-create the archive with the files themselves."
        )


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

    def __enter__(self) -> "_DirTree":
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


def _read_tree(tree: _ZipTree | _DirTree, options: IngestOptions) -> _Collected:
    """Validate the Kaggle layout of a tree and decode its images."""
    collected = _Collected()
    collected.given = len(tree.files) + len(tree.skipped)
    for name, reason in tree.skipped:
        collected.issue(name, IGNORED, reason)
    samples = _plan_layout(tree.files, tree.dirs, tree.name, collected)
    for number, (name, key, split, class_name) in enumerate(samples, start=1):
        _read_one(tree, name, key, split, class_name, options, collected)
        if number % 5000 == 0:
            logger.info("decoded %d of %d images", number, len(samples))
    return collected


def _read_one(
    tree: _ZipTree | _DirTree,
    name: str,
    key: str,
    split: str,
    class_name: str,
    options: IngestOptions,
    collected: _Collected,
) -> None:
    """Decode one image file into the collection, or record why not."""
    try:
        data = tree.read(name)
    except _Rejected as exc:  # over the archive limits
        collected.issue(name, REJECTED, str(exc))
        return
    except Exception as exc:  # bad CRC, encrypted entry, permission denied
        collected.issue(name, REJECTED, f"cannot read: {exc}")
        return
    try:
        image, note = decode_image(data, options.convert)
    except _Rejected as exc:
        collected.issue(name, REJECTED, str(exc))
        return
    if note is None:
        collected.accepted += 1
        collected.accepted_names.append(name)
    else:
        collected.issue(name, CONVERTED, note)
    collected.add(key, image, CLASS_INDEX[class_name], split, _usage_from_name(key))


def _usage_from_name(key: str) -> str:
    """The original FER-2013 Usage from a file name prefix, or "" when it has none."""
    match = _USAGE_PREFIX.match(key.rsplit("/", 1)[-1])
    return match.group(1) if match else ""


def _is_junk(part: str) -> bool:
    """Whether one path component is OS junk or hidden."""
    return part in JUNK_NAMES or part.startswith(".")


def _junk_reason(path: str) -> str | None:
    """Why a path is OS junk to ignore, or None for a real entry."""
    for part in path.rstrip("/").split("/"):
        if _is_junk(part):
            return f"OS junk or hidden file ({part})"
    return None


def _plan_layout(
    files: list[str], dirs: list[str], source: str, collected: _Collected
) -> list[tuple[str, str, str, str]]:
    """Find the dataset root, check splits and classes, and list the image files.

    Junk and files outside ``train/`` and ``test/`` are recorded as ignored, files not
    directly inside a class folder as rejected; layout errors raise one DatasetError
    that lists them all.

    Returns:
        (entry name, key relative to the root, split, class) of each candidate image.
    """
    real_files = [name for name in files if not _junk_reason(name)]
    for name in sorted(set(files) - set(real_files)):
        collected.issue(name, IGNORED, _junk_reason(name))
    root = _find_root(real_files, [d for d in dirs if not _junk_reason(d)], source)
    folders = _folders_below(root, [n.rsplit("/", 1)[0] if "/" in n else "" for n in files] + dirs)
    images_in: dict[tuple[str, str], int] = {}
    samples, outside = [], []
    for name in real_files:
        parts = name[len(root):].split("/")
        if not name.startswith(root) or parts[0] not in SPLITS:
            outside.append(name)
        elif len(parts) == 2:
            collected.issue(name, REJECTED, f"not in a class folder; expected {parts[0]}/<class>/<file>")
        elif len(parts) > 3:
            collected.issue(name, REJECTED, f"nested below the class folder; expected {parts[0]}/<class>/<file>")
        else:
            images_in[(parts[0], parts[1])] = images_in.get((parts[0], parts[1]), 0) + 1
            if parts[1] in CLASS_INDEX:
                samples.append((name, name[len(root):], parts[0], parts[1]))
    _ignore_outside(outside, root, collected)
    _check_classes(folders, images_in, root, source)
    return samples


def _folders_below(root: str, folder_paths: list[str]) -> dict[str, set[str]]:
    """{split: class folder names} for the split folders that exist below ``root``.

    Paths are cut at their first junk component, so a class folder holding only
    ``.DS_Store`` still counts as existing (and is then reported empty).
    """
    folders: dict[str, set[str]] = {}
    for folder in folder_paths:
        parts = folder.strip("/").split("/")
        cut = next((i for i, part in enumerate(parts) if _is_junk(part)), len(parts))
        relative = "/".join(parts[:cut]) + "/"
        if not relative.startswith(root):
            continue
        below = relative[len(root):].strip("/").split("/")
        if below[0] in SPLITS:
            classes = folders.setdefault(below[0], set())
            if len(below) >= 2:
                classes.add(below[1])
    return folders


def _ignore_outside(outside: list[str], root: str, collected: _Collected) -> None:
    """Record files outside train/ and test/ as ignored, with one warning naming where."""
    for name in outside:
        collected.issue(name, IGNORED, f"outside {root}train/ and {root}test/")
    if outside:
        places = sorted({n[len(root):].split("/")[0] if n.startswith(root) else n.split("/")[0] for n in outside})
        collected.warnings.append(
            f"ignored {len(outside)} file(s) outside train/ and test/ (in {', '.join(places[:MAX_LISTED])})"
        )


def _find_root(files: list[str], dirs: list[str], source: str) -> str:
    """"" when train/ or test/ is at the top, else the one top folder holding them."""
    tops = {p.split("/")[0] for p in files + dirs}
    if tops & set(SPLITS):
        return ""
    split_paths = [p.split("/") for p in files + dirs]
    holders = sorted({parts[0] for parts in split_paths if len(parts) > 1 and parts[1] in SPLITS})
    if len(holders) == 1:
        return holders[0] + "/"
    if len(holders) > 1:
        raise DatasetError(
            f"{source} holds the train/test layout in more than one folder ({', '.join(holders)}); "
            "keep only one dataset in it."
        )
    shown = ", ".join(sorted(tops)[:10]) or "nothing"
    raise DatasetError(
        f"{source} has no train/ or test/ folder at the top or one folder down (top level: {shown}); "
        "expected the Kaggle layout train/<class>/*.jpg and test/<class>/*.jpg."
    )


def _check_classes(
    folders: dict[str, set[str]], images_in: dict[tuple[str, str], int], root: str, source: str
) -> None:
    """Raise one DatasetError listing every missing split, missing, unknown or empty class folder."""
    problems = []
    for split in SPLITS:
        if split not in folders:
            problems.append(f"no {root}{split}/ folder")
            continue
        missing = [c for c in CLASSES if c not in folders[split]]
        unknown = sorted(folders[split] - set(CLASSES))
        empty = [c for c in CLASSES if c in folders[split] and not images_in.get((split, c))]
        if missing:
            problems.append("missing class folder(s) " + ", ".join(f"{root}{split}/{c}/" for c in missing))
        if unknown:
            problems.append("unknown class folder(s) " + ", ".join(f"{root}{split}/{c}/" for c in unknown))
        if empty:
            problems.append("empty class folder(s) " + ", ".join(f"{root}{split}/{c}/" for c in empty))
    if problems:
        raise DatasetError(
            f"{source} does not have the FER-2013 layout: "
            + "; ".join(problems)
            + f". Both train/ and test/ need exactly the seven class folders ({', '.join(CLASSES)}), "
            "each with images."
        )


# ---------------------------------------------------------------------------
# fer2013.csv


def _read_csv(path: Path) -> _Collected:
    """Read the original ``emotion,pixels,Usage`` CSV.

    Rows are numbered as a spreadsheet shows them: the header is row 1, so the first
    image is ``fer2013.csv:2``.
    """
    collected = _Collected()
    row = 0  # the last row read whole; an unreadable one is the next
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle, warnings.catch_warnings():
            # numpy warns (future: raises) on unparsable text; make it an error now.
            warnings.simplefilter("error", DeprecationWarning)
            reader = csv.reader(handle)
            columns = _csv_columns(next(reader, None), path.name)
            row = 1
            for row, fields in enumerate(reader, start=2):
                collected.given += 1
                _read_csv_row(fields, row, columns, path.name, collected)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc}); is it really fer2013.csv?") from None
    except csv.Error as exc:
        raise DatasetError(f"{path} row {row + 1}: unreadable CSV ({exc}); fix or remove that row.") from None
    return collected


def _csv_columns(header: list[str] | None, name: str) -> dict[str, int]:
    """Column positions of emotion, pixels and Usage; DatasetError naming any missing."""
    if not header:
        raise DatasetError(
            f"{name} is empty; expected a header row {','.join(CSV_COLUMNS)} and one row per image."
        )
    positions = {column.strip(): i for i, column in enumerate(header)}
    missing = [c for c in CSV_COLUMNS if c not in positions]
    if missing:
        raise DatasetError(
            f"{name} has no column(s) {', '.join(missing)} (header: {','.join(header)}); "
            f"the original fer2013.csv has {','.join(CSV_COLUMNS)}."
        )
    return {c: positions[c] for c in CSV_COLUMNS}


def _read_csv_row(fields: list[str], row: int, columns: dict[str, int], name: str, collected: _Collected) -> None:
    """Parse one CSV row into the collection, or record why not."""
    key = f"{name}:{row}"
    if not fields or not any(f.strip() for f in fields):
        collected.issue(key, IGNORED, "blank line")
        return
    try:
        if len(fields) <= max(columns.values()):
            raise _Rejected(f"{len(fields)} field(s), expected {','.join(CSV_COLUMNS)}")
        class_name = _csv_class(fields[columns["emotion"]])
        usage = _csv_usage(fields[columns["Usage"]])
        image = _csv_pixels(fields[columns["pixels"]])
    except _Rejected as exc:
        collected.issue(key, REJECTED, str(exc))
        return
    collected.accepted += 1
    collected.accepted_names.append(key)
    collected.add(key, image, CLASS_INDEX[class_name], USAGE_TO_SPLIT[usage], usage)


def _csv_class(text: str) -> str:
    """The class name for a CSV emotion code (4=sad, 5=surprise, 6=neutral)."""
    try:
        code = int(text.strip())
    except ValueError:
        raise _Rejected(f"emotion {text!r} is not an integer code 0-6") from None
    if code not in CSV_CODE_TO_CLASS:
        raise _Rejected(f"emotion {code} is out of range 0-6")
    return CSV_CODE_TO_CLASS[code]


def _csv_usage(text: str) -> str:
    """The Usage value, checked against the three FER-2013 ones."""
    usage = text.strip()
    if usage not in USAGE_TO_SPLIT:
        raise _Rejected(f"unknown Usage {usage!r}, expected one of {', '.join(SOURCE_SPLITS)}")
    return usage


def _csv_pixels(text: str) -> np.ndarray:
    """48x48 uint8 from 2304 space-separated integers 0-255."""
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        bad = next((t for t in text.split() if not t.isdigit()), text[:20])
        raise _Rejected(f"non-numeric pixel value {bad!r}") from None
    if values.size != PIXELS_PER_IMAGE:
        raise _Rejected(f"{values.size} pixel values, expected {PIXELS_PER_IMAGE} ({IMAGE_SIZE}x{IMAGE_SIZE})")
    if values.min() < 0 or values.max() > 255:
        raise _Rejected(f"pixel values must be 0-255, found {int(values.min())}..{int(values.max())}")
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


# ---------------------------------------------------------------------------
# From collected samples to the dataset


def _finish(
    path: Path, source_format: str, checksum: str, collected: _Collected, options: IngestOptions
) -> IngestResult:
    """Sort, analyse duplicates, apply the policies, check and build dataset and report."""
    dataset = _sorted_dataset(collected)
    analysis = analyse_duplicates(dataset.images, dataset.labels, dataset.splits)
    report = IngestReport(
        source=path.name,
        source_format=source_format,
        source_sha256=checksum,
        options=options,
        given=collected.given,
        accepted=collected.accepted,
        issues=sorted(collected.issues, key=lambda i: (i.status, i.path)),
        duplicates=analysis.duplicates_summary(),
        leakage=analysis.leakage_summary(),
        warnings=list(collected.warnings),
        accepted_files=sorted(collected.accepted_names),
    )
    _fill_counts(report, dataset)  # so that the report attached to an IngestError is complete
    _check_strict(report, options)
    dataset = _apply_policies(dataset, analysis, options, report)
    _fill_counts(report, dataset)
    report.warnings += _data_warnings(dataset, report, options)
    _check_every_class_present(report)
    dataset.manifest = _manifest(dataset, report)
    return IngestResult(dataset, report)


def _sorted_dataset(collected: _Collected) -> FerDataset:
    """Arrays of the collected samples, sorted by key."""
    keys = np.asarray(collected.keys, dtype=str)
    order = np.argsort(keys, kind="stable")
    if collected.images:
        images = np.stack([collected.images[i] for i in order])
    else:
        images = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    return FerDataset(
        images=images,
        labels=np.asarray(collected.labels, dtype=np.uint8)[order],
        splits=np.asarray(collected.splits, dtype="U5")[order],
        source_splits=np.asarray(collected.source_splits, dtype="U11")[order],
        keys=keys[order],
    )


def _check_strict(report: IngestReport, options: IngestOptions) -> None:
    """Under ``strict``, fail on any rejected file, quoting the first few."""
    rejected = [i for i in report.issues if i.status == REJECTED]
    if not rejected or not options.strict:
        return
    listed = "; ".join(f"{i.path}: {i.reason}" for i in rejected[:MAX_LISTED])
    more = f" (and {len(rejected) - MAX_LISTED} more)" if len(rejected) > MAX_LISTED else ""
    raise IngestError(
        f"{len(rejected)} file(s) in {report.source} cannot be used: {listed}{more}. "
        "Fix or remove them, or ingest with strict=False to leave them out.",
        report,
    )


def _apply_policies(
    dataset: FerDataset, analysis: DuplicateAnalysis, options: IngestOptions, report: IngestReport
) -> FerDataset:
    """Apply duplicate_policy and drop_leakage; record dropped samples in the report."""
    drop = np.zeros(len(dataset), dtype=bool)
    conflicting = analysis.conflicting_members()
    if conflicting.size and options.duplicate_policy == "fail":
        raise IngestError(_conflict_message(dataset, analysis, report.source), report)
    if options.duplicate_policy == "drop":
        drop[conflicting] = True
        report.dropped += [
            FileIssue(str(dataset.keys[i]), "dropped", "identical image with another label (duplicate_policy=drop)")
            for i in conflicting
        ]
    report.duplicates["dropped"] = int(drop.sum())
    report.leakage["dropped"] = 0
    if options.drop_leakage:
        # Recomputed on what is left: a conflicting group may already be gone.
        kept = np.flatnonzero(~drop)
        left = analyse_duplicates(dataset.images[kept], dataset.labels[kept], dataset.splits[kept])
        leaked = kept[left.leaked_train]
        drop[leaked] = True
        report.dropped += [
            FileIssue(str(dataset.keys[i]), "dropped", "train image identical to a test image (drop_leakage)")
            for i in leaked
        ]
        report.leakage["dropped"] = int(leaked.size)
    return dataset.subset(np.flatnonzero(~drop)) if drop.any() else dataset


def _conflict_message(dataset: FerDataset, analysis: DuplicateAnalysis, source: str) -> str:
    """DatasetError text for duplicate_policy="fail", quoting the first groups."""
    examples = []
    for group in analysis.conflicting[:MAX_LISTED]:
        members = analysis.groups[group]
        examples.append(" = ".join(f"{dataset.keys[i]} ({CLASSES[dataset.labels[i]]})" for i in members))
    return (
        f"{len(analysis.conflicting)} group(s) of identical images in {source} carry different labels, e.g. "
        + "; ".join(examples)
        + ". Use duplicate_policy='drop' to remove them or 'keep' to keep them."
    )


def _check_every_class_present(report: IngestReport) -> None:
    """Fail when a split or a class ended up with no samples (all rejected or dropped)."""
    empty = [f"{split}/{name}" for split in SPLITS for name, n in report.counts[split].items() if n == 0]
    if empty:
        raise IngestError(
            f"{report.source} leaves no usable images for {', '.join(empty)} after ingest; every class needs "
            "images in both train and test. Add or fix images there, or drop fewer (duplicate_policy, "
            "drop_leakage).",
            report,
        )


def _fill_counts(report: IngestReport, dataset: FerDataset) -> None:
    """Set the report's split x class and original-usage counts from the dataset."""
    report.counts = _split_class_counts(dataset)
    report.source_split_counts = _source_split_counts(dataset)


def _split_class_counts(dataset: FerDataset) -> dict[str, dict[str, int]]:
    """{split: {class: n}} with every class, zeros included."""
    return {split: class_counts(dataset.labels[dataset.splits == split]) for split in SPLITS}


def _source_split_counts(dataset: FerDataset) -> dict[str, int]:
    """Samples per original Usage; "unknown" only when some have none."""
    counts = {name: int(np.sum(dataset.source_splits == name)) for name in SOURCE_SPLITS}
    unknown = int(np.sum(dataset.source_splits == ""))
    if unknown:
        counts["unknown"] = unknown
    return counts


def _data_warnings(dataset: FerDataset, report: IngestReport, options: IngestOptions) -> list[str]:
    """Warnings about what the data holds and what the options did with it."""
    found = []
    unknown = report.source_split_counts.get("unknown", 0)
    if unknown:
        found.append(
            f"{unknown} sample(s) have no Training_/PublicTest_/PrivateTest_ name prefix; original usage unknown"
        )
    expected_split = np.array([USAGE_TO_SPLIT.get(u, s) for u, s in zip(dataset.source_splits, dataset.splits)])
    misplaced = int(np.sum(expected_split != dataset.splits))
    if misplaced:
        found.append(
            f"{misplaced} sample(s) sit in a split their name prefix contradicts (e.g. Training_* in test/)"
        )
    if report.rejected and not options.strict:
        found.append(f"{report.rejected} file(s) rejected and left out (strict=False)")
    if report.converted:
        found.append(f"{report.converted} file(s) converted to {IMAGE_SIZE}x{IMAGE_SIZE} grayscale")
    dup = report.duplicates
    if dup["conflicting_groups"] and options.duplicate_policy == "keep":
        found.append(
            f"{dup['conflicting_groups']} group(s) of identical images carry different labels "
            f"({dup['conflicting_files']} files, kept; duplicate_policy='drop' removes them)"
        )
    if report.leakage["test_images"] and not options.drop_leakage:
        found.append(
            f"{report.leakage['test_images']} test image(s) are identical to train images "
            "(kept; drop_leakage=True drops the train copies)"
        )
    if dup["constant_images"]:
        found.append(f"{dup['constant_images']} blank (single-value) image(s)")
    return found


def _manifest(dataset: FerDataset, report: IngestReport) -> dict[str, Any]:
    """The canonical dataset's manifest.json content."""
    return {
        "format_version": FORMAT_VERSION,
        "source": report.source,
        "source_sha256": report.source_sha256,
        "source_format": report.source_format,
        "image_size": IMAGE_SIZE,
        "classes": list(CLASSES),
        "num_samples": len(dataset),
        "counts": report.counts,
        "source_split_counts": report.source_split_counts,
        "duplicates": dict(report.duplicates),
        "leakage": dict(report.leakage),
        "ingest": {**report.status_counts(), "dropped": len(report.dropped)},
        "options": dataclasses.asdict(report.options),
    }


# ---------------------------------------------------------------------------
# Small helpers


def _open_image(data: bytes) -> Image.Image:
    """Open image bytes, trying JPEG and PNG first (fast path) and then every format."""
    for formats in (AS_IS_FORMATS, None):
        try:
            return Image.open(io.BytesIO(data), formats=formats)
        except Image.DecompressionBombError as exc:
            raise _Rejected(f"image too large to decode safely: {exc}") from None
        except Exception:  # PIL raises several types for unreadable headers
            continue
    raise _Rejected("not an image (no image format recognises its contents)")


def _to_canonical(image: Image.Image) -> np.ndarray:
    """Any PIL image as 48x48 uint8 grayscale: EXIF-rotated, centre-cropped to square, resized."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grayscale: PIL's convert("L") clips instead of scaling.
        wide = np.asarray(image).astype(np.int64)
        scale = 257 if wide.max() > 255 else 1
        image = Image.fromarray(np.clip(wide // scale, 0, 255).astype(np.uint8), mode="L")
    gray = image.convert("L")
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = ImageOps.fit(gray, (IMAGE_SIZE, IMAGE_SIZE), method=Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _counts_table(counts: dict[str, dict[str, int]]) -> list[str]:
    """Split x class table of counts with row and column totals."""
    header = ["split", *CLASSES, "total"]
    rows = [[split, *(counts[split][c] for c in CLASSES), sum(counts[split].values())] for split in SPLITS]
    rows.append(["total", *(sum(counts[s][c] for s in SPLITS) for c in CLASSES), sum(r[-1] for r in rows)])
    widths = [max(len(str(h)), *(len(f"{r[i]:,}" if i else r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [f"{v:,}".rjust(w) for v, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
    return lines


def _ignored_breakdown(issues: list[FileIssue]) -> list[str]:
    """One line counting ignored inputs per reason, if any."""
    reasons: dict[str, int] = {}
    for issue in issues:
        if issue.status == IGNORED:
            reasons[issue.reason] = reasons.get(issue.reason, 0) + 1
    if not reasons:
        return []
    return ["Ignored: " + ", ".join(f"{n:,} {reason}" for reason, n in sorted(reasons.items()))]


def _duplicate_lines(duplicates: dict[str, int], leakage: dict[str, int], options: IngestOptions) -> list[str]:
    """Duplicate and leakage lines of the summary."""
    return [
        f"Duplicates (identical pixels): {duplicates['groups']:,} groups, {duplicates['files']:,} files in them, "
        f"{duplicates['conflicting_groups']:,} groups with conflicting labels "
        f"({duplicates['conflicting_files']:,} files; policy {options.duplicate_policy}, "
        f"{duplicates.get('dropped', 0):,} dropped)",
        f"Blank (single-value) images: {duplicates['constant_images']:,}",
        f"Train-test leakage: {leakage['test_images']:,} test images identical to a train image, "
        f"{leakage['train_images']:,} train images involved, {leakage['label_mismatch']:,} with another label "
        f"({leakage.get('dropped', 0):,} train images dropped)",
    ]


def _issue_lines(title: str, issues: list[FileIssue], limit: int) -> list[str]:
    """A titled list of the first ``limit`` issues with reasons."""
    if not issues:
        return []
    lines = [f"{title} ({len(issues):,}):"]
    lines += [f"  {i.path}: {i.reason}" for i in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  ... and {len(issues) - limit:,} more")
    return lines
