"""Cloud Storage at the edge: the one library module that talks to GCS.

It uses ``google-cloud-storage`` (which honours ``STORAGE_EMULATOR_HOST``, so the
same code runs against fake-gcs-server locally) with the client's retry and backoff
on retriable errors only. ``tf.io.gfile`` is not used because it ignores the emulator.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fer_pipeline.errors import FerError

log = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
FUSE_ROOT = "/gcs/"  # Vertex mounts gs://bucket/x at /gcs/bucket/x (Cloud Storage FUSE)


def is_gcs_uri(value: str) -> bool:
    return str(value).startswith(GCS_SCHEME)


@dataclass(frozen=True)
class GcsPath:
    bucket: str
    name: str  # object name or prefix, no leading slash

    @classmethod
    def parse(cls, uri: str) -> "GcsPath":
        if not is_gcs_uri(uri):
            raise FerError(f"Not a Cloud Storage URI: {uri!r}; expected gs://BUCKET/PATH.")
        bucket, _, name = uri[len(GCS_SCHEME) :].partition("/")
        if not bucket:
            raise FerError(f"Cloud Storage URI {uri!r} has no bucket; expected gs://BUCKET/PATH.")
        return cls(bucket, name.strip("/"))

    def child(self, *parts: str) -> "GcsPath":
        return GcsPath(self.bucket, "/".join(p.strip("/") for p in (self.name, *parts) if p))

    @property
    def uri(self) -> str:
        return f"{GCS_SCHEME}{self.bucket}/{self.name}"


def fuse_path(uri: str) -> str:
    """``gs://b/x`` -> ``/gcs/b/x``: where Vertex's FUSE mount shows the object."""
    path = GcsPath.parse(uri)
    return f"{FUSE_ROOT}{path.bucket}/{path.name}"


def client():
    """A storage client; anonymous against the emulator, default credentials otherwise."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "fer-local"), credentials=AnonymousCredentials())
    return storage.Client()


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    # Our writes are idempotent (content-addressed, or whole-object overwrites), so
    # retrying unconditional uploads is safe; the default only retries conditional ones.
    return DEFAULT_RETRY


def exists(uri: str) -> bool:
    path = GcsPath.parse(uri)
    return client().bucket(path.bucket).blob(path.name).exists(retry=_retry())


def upload_file(local: str | Path, uri: str) -> None:
    path = GcsPath.parse(uri)
    client().bucket(path.bucket).blob(path.name).upload_from_filename(str(local), retry=_retry())


def download_file(uri: str, local: str | Path) -> Path:
    path = GcsPath.parse(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    blob = client().bucket(path.bucket).blob(path.name)
    from google.api_core.exceptions import NotFound

    try:
        blob.download_to_filename(str(local), retry=_retry())
    except NotFound as exc:
        local.unlink(missing_ok=True)
        raise FerError(f"{uri} does not exist; check the path and that the run that writes it finished.") from exc
    return local


def upload_dir(local_dir: str | Path, uri: str, *, last: tuple[str, ...] = ()) -> int:
    """Upload every file under ``local_dir`` to the prefix ``uri``; the files named in
    ``last`` go after all others (a manifest written last marks the upload complete).
    Returns the number of files uploaded."""
    local_dir = Path(local_dir)
    prefix = GcsPath.parse(uri)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local_dir).as_posix() in last)
    for file in files:
        relative = file.relative_to(local_dir).as_posix()
        upload_file(file, prefix.child(relative).uri)
        log.info("uploaded %s", prefix.child(relative).uri)
    return len(files)


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Download every object under the prefix ``uri`` into ``local_dir``."""
    prefix = GcsPath.parse(uri)
    local_dir = Path(local_dir)
    bucket = client().bucket(prefix.bucket)
    found = False
    for blob in client().list_blobs(prefix.bucket, prefix=prefix.name + "/", retry=_retry()):
        relative = blob.name[len(prefix.name) + 1 :]
        if not relative or relative.endswith("/"):
            continue
        found = True
        target = local_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        bucket.blob(blob.name).download_to_filename(str(target), retry=_retry())
    if not found:
        raise FerError(f"No objects under {uri}; check the prefix and that the step that writes it finished.")
    return local_dir


def ensure_bucket(name: str) -> None:
    """Create the bucket if it does not exist (used for the local emulator)."""
    c = client()
    if c.lookup_bucket(name) is None:
        c.create_bucket(name)
