"""The instances file of a batch prediction job: which images, and one JSONL line each.

The served model's signature takes ``{"image_bytes": {"b64": ...}}`` (fer_pipeline.export),
and a Vertex batch job over a JSONL file sends each line's object as one instance. So
each image becomes the line ``{"key": "<its gs:// URI>", "image_bytes": {"b64": "..."}}``;
the job's ``key_field`` (fer_pipeline.cloud.vertex_deploy) strips the key before the
model sees the line and writes it on the image's output line.

Images come from a ``gs://`` folder (every JPEG, PNG, GIF or BMP under it, as the serving
signature decodes) or from a JSONL of image URIs (local or ``gs://``; each line a JSON
string ``"gs://..."`` or an object with ``"uri"``).
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fer_pipeline import storage
from fer_pipeline.errors import FerError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
URI_LIST_SUFFIX = ".jsonl"
KEY = "key"
# What each line holds, for a dry run (which reads no image).
LINE_SHAPE = {KEY: "<the image's gs:// URI>", "image_bytes": {"b64": "<the image file, base64>"}}


def is_uri_list(source: str) -> bool:
    return source.lower().endswith(URI_LIST_SUFFIX)


def image_uris(source: str) -> list[str]:
    """The image URIs ``source`` names: a ``gs://`` folder's images, or a JSONL's lines.

    Raises:
        FerError: no images, or a JSONL line that is not a ``gs://`` URI (file and line named).
    """
    uris = listed_images(source) if is_uri_list(source) else folder_images(source)
    if not uris:
        what = "lines" if is_uri_list(source) else f"images ({', '.join(IMAGE_SUFFIXES)})"
        raise FerError(f"No {what} in {source}; point INPUT at a gs:// folder of images or a JSONL of image URIs.")
    return uris


def folder_images(prefix: str) -> list[str]:
    """Every image object under the ``gs://`` prefix, sorted."""
    folder = storage.GcsPath.parse(prefix)
    names = storage.list_objects(folder.uri)
    return sorted(folder.child(name).uri for name in names if name.lower().endswith(IMAGE_SUFFIXES))


def listed_images(source: str) -> list[str]:
    """The URIs of a JSONL file (local, or ``gs://`` read through a temporary copy)."""
    if storage.is_gcs_uri(source):
        with tempfile.TemporaryDirectory(prefix="fer-batch-") as tmp:
            return parse_uri_lines(storage.download_file(source, Path(tmp) / "uris.jsonl").read_text(), source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FerError(f"Cannot read {source} ({exc}); pass a JSONL of image URIs, one per line.") from None
    return parse_uri_lines(text, source)


def parse_uri_lines(text: str, source: str) -> list[str]:
    """One ``gs://`` URI per non-blank line: a JSON string or ``{"uri": ...}``."""
    uris = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        uri = value.get("uri") if isinstance(value, dict) else value
        if not isinstance(uri, str) or not storage.is_gcs_uri(uri):
            raise FerError(
                f'{source}:{number}: expected a gs:// image URI as a JSON string or {{"uri": ...}}, got {line.strip()[:80]!r}.'
            )
        uris.append(uri)
    return uris


def instance_line(uri: str, image: bytes) -> str:
    return json.dumps({KEY: uri, "image_bytes": {"b64": base64.b64encode(image).decode("ascii")}})


def write_instances(uris: Iterable[str], out_path: Path) -> int:
    """Download each image and write its instance line to ``out_path``; returns the count.
    One image at a time: memory stays at one image whatever the folder's size."""
    count = 0
    with tempfile.TemporaryDirectory(prefix="fer-batch-") as tmp, Path(out_path).open("w", encoding="utf-8") as out:
        for uri in uris:
            local = storage.download_file(uri, Path(tmp) / "image")
            out.write(instance_line(uri, local.read_bytes()) + "\n")
            count += 1
    return count


def stage_instances(uris: list[str], instances_uri: str) -> int:
    """Write the instances file and upload it to ``instances_uri``; returns the line count."""
    with tempfile.TemporaryDirectory(prefix="fer-batch-") as tmp:
        local = Path(tmp) / "instances.jsonl"
        count = write_instances(uris, local)
        storage.upload_file(local, instances_uri)
    return count
