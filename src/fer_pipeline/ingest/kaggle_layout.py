"""The Kaggle layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, possibly one folder
down) of a zip or folder tree: find the root, check splits and classes, ignore OS junk
and files outside the splits, and decode every image into the collection."""

from __future__ import annotations

import re

from fer_pipeline.classes import CLASS_INDEX, CLASSES
from fer_pipeline.dataset import SPLITS
from fer_pipeline.errors import DatasetError
from fer_pipeline.ingest.decoding import decode_image
from fer_pipeline.ingest.folders import _DirTree
from fer_pipeline.ingest.outcomes import (
    CONVERTED,
    IGNORED,
    MAX_LISTED,
    REJECTED,
    _Collected,
    _log_progress,
    _Rejected,
)
from fer_pipeline.ingest.policies import IngestOptions
from fer_pipeline.ingest.zip_source import _ZipTree

JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
_USAGE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_")


def _read_tree(tree: _ZipTree | _DirTree, options: IngestOptions) -> _Collected:
    """Validate the Kaggle layout of a tree and decode its images."""
    collected = _Collected()
    collected.given = len(tree.files) + len(tree.skipped)
    for name, reason in tree.skipped:
        collected.issue(name, IGNORED, reason)
    samples = _plan_layout(tree.files, tree.dirs, tree.name, collected)
    for number, (name, key, split, class_name) in enumerate(samples, start=1):
        _read_one(tree, name, key, split, class_name, options, collected)
        _log_progress(number, "decoded %d of %d images", len(samples))
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
        parts = name[len(root) :].split("/")
        if not name.startswith(root) or parts[0] not in SPLITS:
            outside.append(name)
        elif len(parts) == 1:
            collected.issue(
                name, REJECTED, f"a file where the {parts[0]}/ folder belongs; expected {parts[0]}/<class>/<file>"
            )
        elif len(parts) == 2:
            collected.issue(name, REJECTED, f"not in a class folder; expected {parts[0]}/<class>/<file>")
        elif len(parts) > 3:
            collected.issue(name, REJECTED, f"nested below the class folder; expected {parts[0]}/<class>/<file>")
        else:
            images_in[(parts[0], parts[1])] = images_in.get((parts[0], parts[1]), 0) + 1
            if parts[1] in CLASS_INDEX:
                samples.append((name, name[len(root) :], parts[0], parts[1]))
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
        below = relative[len(root) :].strip("/").split("/")
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
        places = sorted({n[len(root) :].split("/")[0] if n.startswith(root) else n.split("/")[0] for n in outside})
        collected.warnings.append(
            f"ignored {len(outside)} file(s) outside train/ and test/ (in {', '.join(places[:MAX_LISTED])})"
        )


def _find_root(files: list[str], dirs: list[str], source: str) -> str:
    """ "" when train/ or test/ is at the top, else the one top folder holding them."""
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


def _check_classes(folders: dict[str, set[str]], images_in: dict[tuple[str, str], int], root: str, source: str) -> None:
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
