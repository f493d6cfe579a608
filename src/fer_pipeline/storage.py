"""Cloud Storage at the edge: the one library module that talks to GCS.

It uses ``google-cloud-storage`` (which honours ``STORAGE_EMULATOR_HOST``, so the
same code runs against fake-gcs-server locally) with the client's retry and backoff
on retriable errors only. ``tf.io.gfile`` is not used because it ignores the emulator.

Retries: the library's ``DEFAULT_RETRY`` predicate (429, 5xx, connection resets and
timeouts; never 4xx such as 403 or 404), exponential backoff from 1 s, for at most
``get_retry_deadline()`` seconds (120 by default; the ``retry_deadline`` module setting or
``FER_GCS_RETRY_DEADLINE`` change it). When retriable errors last past the deadline the
call raises ``TransientStorageError``: nothing is wrong with the request, run the step
again (a pipeline task's ``set_retry`` does).

``publish_dir`` writes a directory so that readers see all of it or nothing: files go
to a staging prefix first, are copied into place server-side, and the commit file (a
manifest) is written last.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from fer_pipeline.errors import FerError

log = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
FUSE_ROOT = "/gcs/"  # Vertex mounts gs://bucket/x at /gcs/bucket/x (Cloud Storage FUSE)
STAGING = "_staging"  # publish_dir's staging folder, beside the published prefix
DEFAULT_RETRY_DEADLINE = 120.0  # seconds; google-cloud-storage's own default
RETRY_DEADLINE_ENV = "FER_GCS_RETRY_DEADLINE"
# Seconds to keep retrying retriable errors; None: $FER_GCS_RETRY_DEADLINE or DEFAULT_RETRY_DEADLINE.
retry_deadline: float | None = None


class TransientStorageError(FerError):
    """Cloud Storage kept failing with retriable errors (unreachable, 429, 5xx) until the
    retry deadline. Retriable: the same call can succeed later; run the step again."""


def is_gcs_uri(value: str) -> bool:
    return str(value).startswith(GCS_SCHEME)


@dataclass(frozen=True)
class GcsPath:
    bucket: str
    name: str  # object name or prefix, no leading slash

    @classmethod
    def parse(cls, uri: str) -> GcsPath:
        if not is_gcs_uri(uri):
            raise FerError(f"Not a Cloud Storage URI: {uri!r}; expected gs://BUCKET/PATH.")
        bucket, _, name = uri[len(GCS_SCHEME) :].partition("/")
        if not bucket:
            raise FerError(f"Cloud Storage URI {uri!r} has no bucket; expected gs://BUCKET/PATH.")
        return cls(bucket, name.strip("/"))

    def child(self, *parts: str) -> GcsPath:
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

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "fer-local"), credentials=AnonymousCredentials()
        )
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return storage.Client()
    except DefaultCredentialsError as exc:  # no credentials, or a broken key file: not retriable
        raise FerError(
            f"No usable Google Cloud credentials for Cloud Storage ({exc}). Run `gcloud auth application-default "
            "login`, point GOOGLE_APPLICATION_CREDENTIALS at a valid key file, or set STORAGE_EMULATOR_HOST "
            "for the local emulator."
        ) from None


def get_retry_deadline() -> float:
    """Seconds a call keeps retrying retriable errors."""
    if retry_deadline is not None:
        return float(retry_deadline)
    return float(os.environ.get(RETRY_DEADLINE_ENV) or DEFAULT_RETRY_DEADLINE)


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    # Our writes are idempotent (content-addressed, or whole-object overwrites), so
    # retrying unconditional uploads is safe; the default only retries conditional ones.
    # The predicate stays the library's: retriable errors only.
    return DEFAULT_RETRY.with_timeout(get_retry_deadline())


def _is_transient(exc: BaseException) -> bool:
    """A retriable error (or the retry loop giving up on one)."""
    from google.api_core.exceptions import RetryError
    from google.cloud.storage.retry import _should_retry

    return isinstance(exc, RetryError) or _should_retry(exc)


def _transient_as_error(func):
    """Turn retriable errors that outlasted the retries into TransientStorageError."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FerError:
            raise
        except Exception as exc:
            if not _is_transient(exc):
                raise
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            where = args[0] if args else ""
            raise TransientStorageError(
                f"Cloud Storage did not answer {func.__name__}({where}) within the {get_retry_deadline():.0f} s retry "
                f"deadline: {type(cause).__name__}: {cause}. This is retriable: run the step again (pipeline "
                "tasks retry by themselves); if it persists, check STORAGE_EMULATOR_HOST, the network and the "
                "Cloud Storage status page."
            ) from exc

    return wrapper


@_transient_as_error
def exists(uri: str) -> bool:
    path = GcsPath.parse(uri)
    return client().bucket(path.bucket).blob(path.name).exists(retry=_retry())


@_transient_as_error
def upload_file(local: str | Path, uri: str) -> None:
    path = GcsPath.parse(uri)
    client().bucket(path.bucket).blob(path.name).upload_from_filename(str(local), retry=_retry())


@_transient_as_error
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


@_transient_as_error
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


@_transient_as_error
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


@_transient_as_error
def ensure_bucket(name: str) -> None:
    """Create the bucket if it does not exist (used for the local emulator)."""
    c = client()
    if c.lookup_bucket(name, retry=_retry()) is None:
        c.create_bucket(name, retry=_retry())


# --- atomic publication -----------------------------------------------------------------


def staging_prefix(uri: str) -> GcsPath:
    """Where ``publish_dir`` stages uploads for the prefix ``uri``: ``<parent>/_staging/<name>``."""
    path = GcsPath.parse(uri)
    parent, _, name = path.name.rpartition("/")
    return GcsPath(path.bucket, "/".join(p for p in (parent, STAGING, name) if p))


@_transient_as_error
def list_objects(uri: str) -> dict[str, str]:
    """``{name relative to the prefix: base64 MD5}`` of every object under the prefix ``uri``."""
    prefix = GcsPath.parse(uri)
    found = {}
    for blob in client().list_blobs(prefix.bucket, prefix=prefix.name + "/", retry=_retry()):
        relative = blob.name[len(prefix.name) + 1 :]
        if relative and not relative.endswith("/"):
            found[relative] = blob.md5_hash or ""
    return found


@_transient_as_error
def delete_prefix(uri: str) -> int:
    """Delete every object under the prefix ``uri``; returns how many there were."""
    from google.api_core.exceptions import NotFound

    prefix = GcsPath.parse(uri)
    bucket = client().bucket(prefix.bucket)
    names = [b.name for b in client().list_blobs(prefix.bucket, prefix=prefix.name + "/", retry=_retry())]
    for name in names:
        try:
            bucket.blob(name).delete(retry=_retry())
        except NotFound:  # deleted meanwhile (a retried delete, or another run's clean-up)
            pass
    return len(names)


@_transient_as_error
def publish_dir(local_dir: str | Path, uri: str, *, commit_file: str) -> int:
    """Publish ``local_dir`` at the prefix ``uri`` so that no reader sees part of it.

    1. Upload every file to a staging prefix of this run,
       ``<parent>/_staging/<name>/<run id>/`` (``staging_prefix``).
    2. Copy the files server-side into ``uri``, ``commit_file`` last: a reader (or a
       rerun) that finds ``uri/commit_file`` finds every other file complete beside it.
    3. Delete the staging prefix of ``uri``: this run's, and whatever a killed run left.

    An interruption in 1 leaves only staged objects (never read; the next publish of
    the same prefix, or the bucket's lifecycle rule for ``_staging/``, removes them); in
    2, files without ``commit_file``, which readers refuse and the rerun overwrites.
    Cloud Storage has no rename, and a same-bucket copy is a metadata operation, so
    step 2 is short whatever the file sizes.

    Returns:
        The number of files published.
    """
    local_dir = Path(local_dir)
    target = GcsPath.parse(uri)
    files = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    if commit_file not in files:
        raise FerError(f"{local_dir} has no {commit_file}; nothing would mark {uri} complete.")
    files.sort(key=lambda name: name == commit_file)
    staging_root = staging_prefix(uri)
    staging = staging_root.child(uuid.uuid4().hex[:12])
    for name in files:
        upload_file(local_dir / name, staging.child(name).uri)
    log.info("staged %d files at %s", len(files), staging.uri)
    bucket = client().bucket(target.bucket)
    for name in files:
        _copy_object(bucket, staging.child(name).name, target.child(name).name)
    log.info("published %s (%d files, %s last)", uri, len(files), commit_file)
    removed = delete_prefix(staging_root.uri)
    log.info("removed %d staged object(s) under %s", removed, staging_root.uri)
    return len(files)


def _copy_object(bucket, source: str, destination: str) -> None:
    """Server-side copy within one bucket (rewrite: also completes for large objects)."""
    target = bucket.blob(destination)
    token, _, _ = target.rewrite(bucket.blob(source), retry=_retry())
    while token is not None:
        token, _, _ = target.rewrite(bucket.blob(source), token=token, retry=_retry())


def md5_base64(path: str | Path) -> str:
    """A file's MD5 as Cloud Storage reports it (base64), for comparing without a download."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


@_transient_as_error
def download_object(uri: str, target: str | Path) -> Path:
    """Download one object to ``target``; every failure is a FerError that says what to check.

    (For ``predict``: models are read with the caller's default credentials.)
    """
    path = GcsPath.parse(uri)
    target = Path(target)
    try:
        blob = client().bucket(path.bucket).blob(path.name)
        blob.download_to_filename(str(target), **_download_retry())
    except ImportError as exc:
        raise FerError("Reading gs:// models needs google-cloud-storage: pip install google-cloud-storage.") from exc
    except Exception as exc:  # auth, not-found and network errors all end the same way
        if _is_transient(exc):
            raise
        raise FerError(
            f"Could not download {uri}: {exc}. Check the URI and that "
            "`gcloud auth application-default login` (or a service account) can read it."
        ) from exc
    return target


def _download_retry() -> dict:
    """``retry=`` for downloads: the library already retries them with DEFAULT_RETRY (120 s),
    so it is passed only when the deadline was changed."""
    if get_retry_deadline() == DEFAULT_RETRY_DEADLINE:
        return {}
    return {"retry": _retry()}
