"""The six pipeline steps as plain functions over local paths and URIs.

The KFP components and the CLI are thin layers over these: they turn artifacts or
arguments into paths and a config object, call one function here, and report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_pipeline import storage
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.dataset import IMAGES_FILE, MANIFEST_FILE, PASS_A_DATASET, FerDataset
from fer_pipeline.errors import DatasetError, FerError
from fer_pipeline.files import resolve_keras_file, write_json
from fer_pipeline.model_card import MODEL_CARD_FILE, build_card, short_description, to_markdown
from fer_pipeline.runs.record import load_histories

log = logging.getLogger(__name__)

KAGGLE_PREFIX = "kaggle:"
DATASET_POINTER = "dataset.json"
INGEST_REPORT = "ingest_report.json"


# --- 1. ingest --------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestOutcome:
    uri: str  # where the canonical dataset lives: gs:// prefix or local directory
    manifest: dict[str, Any]
    uploaded_files: int  # 0 when the same source was ingested before
    reused: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "manifest": self.manifest,
            "uploaded_files": self.uploaded_files,
            "reused": self.reused,
        }


def fetch_source(source: str, workdir: Path) -> Path:
    """Turn a local path, a ``gs://`` URI or ``kaggle:OWNER/NAME`` into a local path."""
    if source.startswith(KAGGLE_PREFIX):
        return _download_kaggle(source[len(KAGGLE_PREFIX) :])
    if storage.is_gcs_uri(source):
        if source.rstrip("/").endswith((".zip", ".csv")):
            return storage.download_file(source, workdir / Path(source).name)
        return storage.download_dir(source.rstrip("/"), workdir / "source")
    return existing_path(source)


def existing_path(source: str, *, cloud: bool = True) -> Path:
    """A local data source as a Path; a missing one is a wrong command line (exit 2), named
    with the sources the command takes (``cloud``: also gs:// and kaggle:)."""
    path = Path(source).expanduser()
    if not path.exists():
        others = "the original fer2013.csv, a gs:// URI, or kaggle:msambare/fer2013" if cloud else "or fer2013.csv"
        raise FerError(
            f"Data source {source!r} does not exist. Pass the Kaggle zip (fer2013.zip), its extracted folder, {others}."
        )
    return path


def _download_kaggle(handle: str) -> Path:
    try:
        import kagglehub
    except ImportError as exc:  # the CPU image ships it; a bare install may not
        raise FerError("kaggle: sources need the kagglehub package: pip install 'fer-pipeline[kaggle]'.") from exc
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # kagglehub raises several types for auth and network
        raise FerError(
            f"Could not download kaggle:{handle} ({exc}). Set KAGGLE_USERNAME/KAGGLE_KEY or "
            "~/.kaggle/kaggle.json, or download the zip yourself and pass its path."
        ) from exc


def ingest_step(source: str, out_dir: Path, *, gcs_prefix: str = "", options=None) -> IngestOutcome:
    """Read and validate a FER-2013 source into a canonical dataset.

    Args:
        source: local zip/folder/csv, ``gs://`` URI, or ``kaggle:OWNER/NAME``.
        out_dir: local directory for the canonical dataset and its ingest report: new,
            empty, or holding a dataset an earlier ingest wrote (replaced whole); a folder
            holding anything else is refused before the source is read. The dataset is
            written into a staging folder inside it and moved in file by file, manifest
            last, so an interrupted ingest leaves the previous dataset (or, killed
            mid-move, none), never a mix.
        gcs_prefix: when set, the dataset is published under
            ``{gcs_prefix}/datasets/{dataset_key}``; a source ingested before (with the
            same options) is not read or uploaded again. Publication is atomic
            (``storage.publish_dir``, manifest last), so an interrupted ingest leaves no
            dataset that a later step could read, and its rerun publishes it whole.
        options: ``fer_pipeline.ingest.IngestOptions``.

    Returns:
        Where the dataset lives, its manifest, and how many files were uploaded.
    """
    from fer_pipeline.ingest import IngestOptions, read_source, source_checksum

    out_dir = Path(out_dir)
    _refuse_foreign_files(out_dir)
    options = options or IngestOptions()
    with tempfile.TemporaryDirectory(prefix="fer-source-") as workdir:
        local = fetch_source(source, Path(workdir))
        checksum = source_checksum(local)
        target = (
            storage.GcsPath.parse(gcs_prefix).child("datasets", dataset_key(checksum, options)).uri
            if gcs_prefix
            else ""
        )
        manifest = _published_manifest(target, Path(workdir), options) if target else None
        if manifest is not None:
            log.info(
                "ingest: uploaded nothing: %s was already published at %s (sha256 %s)", source, target, checksum[:16]
            )
            return IngestOutcome(target, manifest, 0, True)
        result = read_source(local, options)
    result.dataset.manifest["source"] = source
    _write_dataset(result, out_dir)  # only now: a refused ingest writes nothing
    log.info("ingest: read %d samples from %s", len(result.dataset), source)
    _log_report(result.report, out_dir / INGEST_REPORT)
    if not target:
        return IngestOutcome(str(out_dir), result.dataset.manifest, 0, False)
    uploaded = storage.publish_dir(out_dir, target, commit_file=MANIFEST_FILE)
    log.info("ingest: published %d files to %s", uploaded, target)
    return IngestOutcome(target, result.dataset.manifest, uploaded, False)


_DATASET_FILES = (IMAGES_FILE, INGEST_REPORT, MANIFEST_FILE)  # what ingest_step writes into its folder, in order


def _refuse_foreign_files(out_dir: Path) -> None:
    """Refuse an output folder holding anything but an earlier ingest's files (and staging
    folders an interrupted one left): they used to be listed in the manifest and published
    with the dataset."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FerError(f"{out_dir} is a file, not a folder; give a folder for the dataset (it is made if absent).")
    if not out_dir.is_dir():
        return
    from fer_pipeline.ingest import MAX_LISTED

    foreign = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in out_dir.iterdir()
        if p.name not in _DATASET_FILES and not p.name.startswith(STAGING_PREFIX)
    )
    if foreign:
        more = f" and {len(foreign) - MAX_LISTED} more" if len(foreign) > MAX_LISTED else ""
        raise FerError(
            f"{out_dir} holds files that are not a dataset an earlier ingest wrote "
            f"({', '.join(foreign[:MAX_LISTED])}{more}); "
            "ingest into a new or empty folder, or move those files away."
        )


STAGING_PREFIX = ".ingest-staging-"  # inside --out, so that each file's move is a rename on one filesystem


def _write_dataset(result, out_dir: Path) -> None:
    """Write the dataset, its report and the manifest into a staging folder inside ``out_dir``,
    then move them in (``_move_in``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        result.dataset.save(staging)
        write_json(staging / INGEST_REPORT, result.report.to_dict())
        # The manifest lists every other file with its MD5, so readers can tell a whole dataset from a mix.
        result.dataset.manifest["files"] = {
            p.name: {"md5": storage.md5_base64(p), "bytes": p.stat().st_size}
            for p in sorted(staging.iterdir())
            if p.is_file() and p.name != MANIFEST_FILE
        }
        write_json(staging / MANIFEST_FILE, result.dataset.manifest, sort_keys=True)
        _move_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty unless the write failed


def _move_in(staging: Path, out_dir: Path) -> None:
    """Replace an earlier dataset's files one by one, its manifest first and the new one last:
    the manifest marks a dataset whole, so a reader finds the old dataset, the new one, or
    (killed mid-move) none, never a mix. The folder itself stays: it may be the working
    directory, a mount point or a link. Staging folders an interrupted ingest left go too."""
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    for name in _DATASET_FILES:  # the manifest last
        os.replace(staging / name, out_dir / name)
    for left in out_dir.glob(f"{STAGING_PREFIX}*"):
        if left != staging:
            shutil.rmtree(left, ignore_errors=True)


def _log_report(report, report_path: Path) -> None:
    """What became of every input, and the report's warnings, as `validate` shows them."""
    log.info("ingest: %s (each one listed in %s)", report.files_line(), report_path)
    for warning in report.warnings:
        log.warning("ingest: %s", warning)


def dataset_key(checksum: str, options) -> str:
    """The dataset's folder under ``datasets/``: the source's sha256[:16], plus a digest of
    the ingest options when they are not the defaults (other options, another dataset)."""
    from fer_pipeline.ingest import IngestOptions

    if options == IngestOptions():
        return checksum[:16]
    settings = json.dumps(dataclasses.asdict(options), sort_keys=True)
    return f"{checksum[:16]}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


def _published_manifest(target: str, workdir: Path, options) -> dict[str, Any] | None:
    """The manifest of the complete dataset at ``target``; None when there is none, or when
    what is there does not match it (then the ingest publishes the dataset again)."""
    from fer_pipeline.ingest import IngestOptions

    if not storage.exists(f"{target}/{MANIFEST_FILE}"):
        return None
    storage.download_file(f"{target}/{MANIFEST_FILE}", workdir / MANIFEST_FILE)
    manifest = json.loads((workdir / MANIFEST_FILE).read_text())
    problems = file_problems(manifest, storage.list_objects(target))
    recorded = manifest.get("options")
    try:  # options recorded before a field existed take its default
        same_options = recorded is None or IngestOptions(**recorded) == options
    except (TypeError, FerError):
        same_options = False
    if not same_options:
        problems.append(f"ingested with options {recorded}")
    if problems:
        log.warning("ingest: %s is not a complete dataset (%s); publishing it again", target, "; ".join(problems))
        return None
    return manifest


def file_problems(manifest: dict[str, Any], present: dict[str, str]) -> list[str]:
    """What differs between the files a manifest lists and ``present`` ({name: base64 MD5}).

    Manifests written before they listed their files are taken as they are.
    """
    problems = []
    for name, info in (manifest.get("files") or {}).items():
        if name not in present:
            problems.append(f"{name} is missing")
        elif present[name] and present[name] != info["md5"]:
            problems.append(f"{name} is not the file the manifest lists (MD5 differs)")
    return problems


def load_dataset(uri: str) -> FerDataset:
    """Load a canonical dataset from a local directory, a ``gs://`` prefix, or a pointer file.

    A pointer is the JSON file the ingest component writes as its Dataset artifact
    (``IngestOutcome.to_json``: ``{"uri": <the dataset's folder or gs:// prefix>, ...}``).
    Any other file, a pointer without ``uri``, and a pointer to another file are refused
    with a DatasetError naming the file.
    """
    path = Path(uri)
    if path.is_file():  # a Dataset artifact's pointer (dataset.json)
        uri = _pointer_target(path)
        path = Path(uri)
    if not storage.is_gcs_uri(uri):
        return FerDataset.load(path)
    cache = Path(tempfile.gettempdir()) / "fer-pipeline-cache" / storage.GcsPath.parse(uri).name.replace("/", "_")
    if not (cache / MANIFEST_FILE).is_file():
        staging = Path(tempfile.mkdtemp(prefix="fer-download-"))
        storage.download_dir(uri, staging)
        _check_download(uri, staging)
        shutil.rmtree(cache, ignore_errors=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, cache)  # atomic: a half-downloaded cache is never read
    return FerDataset.load(cache)


def _pointer_target(path: Path) -> str:
    """The ``uri`` a Dataset artifact's pointer file holds: a folder or a ``gs://`` prefix."""
    fix = f'{PASS_A_DATASET}, or the pointer the ingest component writes (JSON with its "uri")'
    try:
        pointer = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):  # a zip, an image, half a file: not a pointer
        raise DatasetError(f"{path} is a file, not a canonical dataset; {fix}.") from None
    target = pointer.get("uri") if isinstance(pointer, dict) else None
    if not isinstance(target, str) or not target:
        raise DatasetError(f'{path} is not a dataset pointer (no "uri" naming the dataset); {fix}.')
    if not storage.is_gcs_uri(target) and Path(target).is_file():
        raise DatasetError(f"{path} points at {target}, a file, not a dataset folder; {fix}.")
    return target


def _check_download(uri: str, directory: Path) -> None:
    """Refuse a downloaded dataset without its manifest, or with files other than it lists."""
    manifest_path = directory / MANIFEST_FILE
    problems = (
        ["no manifest.json"]
        if not manifest_path.is_file()
        else file_problems(
            json.loads(manifest_path.read_text()),
            {p.relative_to(directory).as_posix(): storage.md5_base64(p) for p in directory.rglob("*") if p.is_file()},
        )
    )
    if problems:
        shutil.rmtree(directory, ignore_errors=True)
        raise FerError(
            f"{uri} is not a complete canonical dataset ({'; '.join(problems)}): an ingest was interrupted or "
            "is still publishing it. Run the ingest step again; it publishes the dataset whole."
        )


# --- 2. split and weight ----------------------------------------------------------------


def split_step(dataset_uri: str, out_path: Path, cfg: SplitConfig):
    """Stratified train/validation split and balanced class weights, saved as JSON."""
    from fer_pipeline.split import make_split

    split = make_split(load_dataset(dataset_uri), cfg)
    split.save(out_path)
    log.info(
        "split: %d train, %d validation; weights %s",
        len(split.train_indices),
        len(split.val_indices),
        split.class_weights,
    )
    return split


# --- 3./4. training -----------------------------------------------------------------------


def train_frozen_step(dataset_uri: str, split_path: Path, out_dir: Path, cfg: TrainConfig):
    """Phase 1: train the head on a frozen backbone; writes model.keras and history.json."""
    from fer_pipeline.split import Split
    from fer_pipeline.trainer import train_frozen

    return train_frozen(load_dataset(dataset_uri), Split.load(split_path), cfg, Path(out_dir))


def fine_tune_step(dataset_uri: str, split_path: Path, model_path: Path, out_dir: Path, cfg: TrainConfig):
    """Phase 2: unfreeze the backbone and fine-tune; writes model.keras and history.json."""
    from fer_pipeline.split import Split
    from fer_pipeline.trainer import fine_tune

    return fine_tune(Path(model_path), load_dataset(dataset_uri), Split.load(split_path), cfg, Path(out_dir))


# --- 5. evaluation ----------------------------------------------------------------------


def evaluate_step(dataset_uri: str, model_path: Path, out_dir: Path, *, history_paths=(), run_info=None) -> dict:
    """Test-split metrics, plots and the HTML report; returns the metrics dict."""
    from fer_pipeline.evaluate import evaluate

    histories = load_histories(history_paths)  # before anything is written: a refused command writes nothing
    return evaluate(Path(model_path), load_dataset(dataset_uri), Path(out_dir), histories=histories, run_info=run_info)


# --- 6. registration --------------------------------------------------------------------


def register_step(
    model_path: Path,
    metrics_path: Path,
    *,
    registry: str,
    display_name: str,
    labels: dict[str, str],
    primary_metric: str = "macro_f1",
    vertex: dict[str, str] | None = None,
) -> dict:
    """Export the serving SavedModel and register it as a new version.

    Args:
        model_path: the trained ``model.keras``, or the training output folder holding it.
        metrics_path: ``metrics.json`` from evaluation (``vertex_evaluation.json`` beside it
            is imported as the model evaluation on Vertex).
        registry: ``vertex``, or a local directory / ``gs://`` prefix for the local registry.
        display_name: the model family; each run adds a version.
        labels: metadata such as the dataset checksum and the commit.
        primary_metric: the metric a new version must beat to become ``champion``.
        vertex: ``project``, ``location``, ``serving_image``, ``staging_uri`` for Vertex.

    Returns:
        The registered version's description (name, version, aliases, location).
    """
    from fer_pipeline.export import export_serving_model
    from fer_pipeline.registry import read_metrics_file

    metrics = read_metrics_file(metrics_path, primary_metric)  # before the export: a refusal costs nothing
    model_path = resolve_keras_file(model_path)  # a training output folder names its model.keras
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fer-export-") as tmp:
        export_dir = export_serving_model(Path(model_path), Path(tmp) / "model")
        shutil.copy2(model_path, export_dir / "model.keras")  # keep the Keras file beside the SavedModel
        _place_model_card(export_dir, metrics, metrics_path)  # travels with the model into either registry
        if registry == "vertex":
            return _register_vertex(
                export_dir, metrics, metrics_path, display_name, labels, primary_metric, vertex or {}
            )
        return _register_local(export_dir, metrics, registry, display_name, labels, primary_metric, started)


def _place_model_card(export_dir: Path, metrics: dict, metrics_path: Path) -> None:
    """Put the evaluation's model card beside the model; an evaluation from before cards
    gets one built from its metrics (without the run's recipe, which it did not keep)."""
    written = Path(metrics_path).with_name(MODEL_CARD_FILE)
    if written.is_file():
        shutil.copy2(written, export_dir / MODEL_CARD_FILE)
    else:
        (export_dir / MODEL_CARD_FILE).write_text(to_markdown(build_card(metrics)), encoding="utf-8")


def _register_local(export_dir, metrics, registry, display_name, labels, primary_metric, started) -> dict:
    from fer_pipeline.registry import LocalRegistry

    description = f"accuracy {metrics.get('accuracy', 0):.4f}, macro-F1 {metrics.get('macro_f1', 0):.4f}"
    if storage.is_gcs_uri(registry):
        raise FerError("A gs:// local registry is not supported yet; pass a local directory or 'vertex'.")
    # The ROC curves (hundreds of points each) stay in the evaluation's metrics.json and plot:
    # in the index they were most of every version's entry, and of `register`'s and `models show`'s output.
    summary = {key: value for key, value in metrics.items() if key != "roc_curves"}
    version = LocalRegistry(Path(registry)).register(
        display_name, export_dir, summary, labels=labels, description=description, primary_metric=primary_metric
    )
    log.info("register: %s in %.1f s", version, time.time() - started)
    return _version_dict(version) | {"model_card": str(version.path / MODEL_CARD_FILE)}


def _version_dict(version) -> dict:
    import dataclasses

    data = dataclasses.asdict(version) if dataclasses.is_dataclass(version) else dict(vars(version))
    return json.loads(json.dumps(data, default=str))


def _register_vertex(export_dir, metrics, metrics_path, display_name, labels, primary_metric, vertex) -> dict:
    from fer_pipeline.cloud.vertex_registry import register_vertex_model

    missing = [k for k in ("project", "location", "serving_image", "staging_uri") if not vertex.get(k)]
    if missing:
        raise FerError(f"Vertex registration needs these settings: {', '.join(missing)}.")
    artifact_uri = storage.GcsPath.parse(vertex["staging_uri"]).child("models", display_name, str(int(time.time()))).uri
    storage.upload_dir(export_dir, artifact_uri)
    evaluation_path = Path(metrics_path).with_name("vertex_evaluation.json")
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}
    card_uri = f"{artifact_uri}/{MODEL_CARD_FILE}"  # uploaded with the model's files just above
    registered = register_vertex_model(
        project=vertex["project"],
        location=vertex["location"],
        display_name=display_name,
        artifact_uri=artifact_uri,
        serving_image=vertex["serving_image"],
        metrics=metrics,
        evaluation=evaluation,
        labels=labels,
        primary_metric=primary_metric,
        description=short_description(metrics, card_uri),
    )
    return registered | {"model_card": card_uri}
