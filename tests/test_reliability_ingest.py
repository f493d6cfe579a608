"""Interrupted ingest and transient Cloud Storage errors, against fake-gcs-server.

- An ingest process killed (SIGKILL) while it stages its files, or while it copies
  them into place, leaves no dataset a later step can read; its rerun publishes exactly
  one complete dataset and removes what the killed run staged.
- An emulator stopped in the middle of an ingest makes the step fail with a retriable
  error (TransientStorageError) within the configured retry deadline; the rerun, once
  the emulator is back, succeeds.
- A published dataset whose files do not match its manifest is refused by readers and
  published again by the next ingest.
- Retries: only retriable errors, for a configurable deadline; the pipeline's
  repeatable steps carry set_retry, registration does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from fer_pipeline import steps, storage, synthetic
from fer_pipeline.errors import FerError
from fer_pipeline.ingest import IngestOptions, source_checksum
from pipelines.gcs_emulator import GcsEmulator

BUCKET = "reliability"
PREFIX = f"gs://{BUCKET}/data"
DATASET_FILES = ("images.npz", "ingest_report.json", "manifest.json")


@pytest.fixture()
def gcs(tmp_path, monkeypatch):
    """A fresh emulator; STORAGE_EMULATOR_HOST stays set for the whole test, even while it is stopped."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # steps.load_dataset's download cache, per test
    emulator = GcsEmulator(tmp_path / "gcs").start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    storage.ensure_bucket(BUCKET)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return synthetic.write_kaggle_zip(tmp_path_factory.mktemp("src") / "fer2013.zip", n_train=3, n_test=2)


def target_of(source: Path, options: IngestOptions = IngestOptions()) -> tuple[str, str]:
    key = steps.dataset_key(source_checksum(source), options)
    return key, f"{PREFIX}/datasets/{key}"


def datasets_objects() -> set[str]:
    return set(storage.list_objects(f"{PREFIX}/datasets"))


def assert_one_complete_dataset(source: Path, key: str, target: str) -> None:
    assert datasets_objects() == {f"{key}/{name}" for name in DATASET_FILES}  # nothing staged is left
    dataset = steps.load_dataset(target)
    assert len(dataset) == 7 * 5 and dataset.manifest["source_sha256"] == source_checksum(source)


# ------------------------------------------------------------------ killed mid-upload
CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    from fer_pipeline import steps, storage

    stage, marker, source, out, prefix = sys.argv[1:6]
    real_upload, real_copy = storage.upload_file, storage._copy_object

    def hang():
        pathlib.Path(marker).write_text(stage)
        time.sleep(600)  # the test kills us here

    def upload(local, uri):
        real_upload(local, uri)
        if stage == "staging":
            hang()

    def copy(bucket, source_name, target_name):
        real_copy(bucket, source_name, target_name)
        if stage == "commit":
            hang()

    storage.upload_file, storage._copy_object = upload, copy
    steps.ingest_step(source, pathlib.Path(out), gcs_prefix=prefix)
    """
)


@pytest.mark.parametrize("stage", ["staging", "commit"])
def test_ingest_killed_mid_upload_leaves_nothing_readable_and_the_rerun_publishes_one_dataset(
    gcs, source, tmp_path, stage
):
    key, target = target_of(source)
    marker, log = tmp_path / "marker", tmp_path / "child.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, stage, str(marker), str(source), str(tmp_path / "out1"), PREFIX],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        try:
            deadline = time.monotonic() + 60
            while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert marker.exists(), f"the child never reached the {stage} stage: {log.read_text()}"
            child.kill()  # SIGKILL, in the middle of the upload
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == -9

    left = datasets_objects()
    assert left and f"{key}/manifest.json" not in left
    if stage == "staging":  # only staged objects, nothing at the dataset's own prefix
        assert all(name.startswith(f"{storage.STAGING}/{key}/") for name in left), left
    else:  # the first file copied into place, without the manifest that would make it a dataset
        assert f"{key}/images.npz" in left
    with pytest.raises(FerError, match="not a complete canonical dataset|No objects under"):
        steps.load_dataset(target)

    outcome = steps.ingest_step(str(source), tmp_path / "out2", gcs_prefix=PREFIX)
    assert (outcome.uri, outcome.reused, outcome.uploaded_files) == (target, False, len(DATASET_FILES))
    assert_one_complete_dataset(source, key, target)
    again = steps.ingest_step(str(source), tmp_path / "out3", gcs_prefix=PREFIX)
    assert again.reused and again.uploaded_files == 0


# ------------------------------------------------------------------ emulator stopped mid-run
def test_emulator_stopped_mid_ingest_fails_retriably_and_the_rerun_succeeds(gcs, source, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "retry_deadline", 2.0)  # the default 120 s would make this test slow
    key, target = target_of(source)
    real_upload = storage.upload_file
    uploaded = []

    def upload_then_stop(local, uri):
        real_upload(local, uri)
        uploaded.append(uri)
        if len(uploaded) == 1:
            gcs.stop()
            os.environ["STORAGE_EMULATOR_HOST"] = gcs.url  # clients keep calling the stopped emulator

    monkeypatch.setattr(storage, "upload_file", upload_then_stop)
    with pytest.raises(
        storage.TransientStorageError, match=r"within the 2 s retry deadline.*retriable: run the step again"
    ):
        steps.ingest_step(str(source), tmp_path / "a", gcs_prefix=PREFIX)
    assert len(uploaded) == 1  # the second upload never got through

    monkeypatch.setattr(storage, "upload_file", real_upload)
    gcs.start()  # same port and folder: what was written before the stop is still there
    assert datasets_objects() and all(name.startswith(f"{storage.STAGING}/") for name in datasets_objects())
    outcome = steps.ingest_step(str(source), tmp_path / "b", gcs_prefix=PREFIX)
    assert not outcome.reused and outcome.uploaded_files == len(DATASET_FILES)
    assert_one_complete_dataset(source, key, target)


def test_an_unreachable_store_is_a_transient_error_for_every_call(gcs, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "retry_deadline", 1.0)
    gcs.stop()
    os.environ["STORAGE_EMULATOR_HOST"] = gcs.url
    (tmp_path / "f").write_text("x")
    calls = [
        lambda: storage.exists(f"{PREFIX}/x"),
        lambda: storage.upload_file(tmp_path / "f", f"{PREFIX}/x"),
        lambda: storage.download_file(f"{PREFIX}/x", tmp_path / "g"),
        lambda: storage.download_dir(f"{PREFIX}/x", tmp_path / "h"),
        lambda: storage.list_objects(f"{PREFIX}/x"),
        lambda: storage.download_object(f"{PREFIX}/model.keras", tmp_path / "m.keras"),
    ]
    for call in calls:
        with pytest.raises(storage.TransientStorageError):
            call()


# ------------------------------------------------------------------ manifest and files disagree
def test_a_dataset_whose_files_differ_from_its_manifest_is_refused_and_republished(gcs, source, tmp_path):
    key, target = target_of(source)
    steps.ingest_step(str(source), tmp_path / "a", gcs_prefix=PREFIX)
    (tmp_path / "other.npz").write_bytes(b"not the dataset")
    storage.upload_file(tmp_path / "other.npz", f"{target}/images.npz")  # e.g. a concurrent writer's file

    with pytest.raises(FerError, match=r"images\.npz is not the file the manifest lists"):
        steps.load_dataset(target)
    outcome = steps.ingest_step(str(source), tmp_path / "b", gcs_prefix=PREFIX)
    assert not outcome.reused and outcome.uploaded_files == len(DATASET_FILES)
    assert_one_complete_dataset(source, key, target)


def test_other_ingest_options_make_another_dataset(gcs, source, tmp_path):
    plain = steps.ingest_step(str(source), tmp_path / "a", gcs_prefix=PREFIX)
    converted = steps.ingest_step(str(source), tmp_path / "b", gcs_prefix=PREFIX, options=IngestOptions(convert=True))
    assert plain.uri.endswith(f"/datasets/{source_checksum(source)[:16]}")  # default options: the plain checksum
    assert converted.uri != plain.uri and not converted.reused
    assert converted.manifest["options"]["convert"] is True
    assert steps.ingest_step(str(source), tmp_path / "c", gcs_prefix=PREFIX, options=IngestOptions(convert=True)).reused


def test_publish_dir_needs_its_commit_file(gcs, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"a")
    with pytest.raises(FerError, match="no manifest.json"):
        storage.publish_dir(tmp_path / "d", f"{PREFIX}/x", commit_file="manifest.json")
    assert datasets_objects() == set() and storage.list_objects(f"{PREFIX}/x") == {}


# ------------------------------------------------------------------ retry policy
def test_storage_retries_retriable_errors_only_for_the_configured_deadline(monkeypatch):
    import requests
    from google.api_core import exceptions as api

    predicate = storage._retry()._predicate
    for retriable in (
        api.TooManyRequests("x"),
        api.InternalServerError("x"),
        api.ServiceUnavailable("x"),
        api.GatewayTimeout("x"),
        requests.ConnectionError("x"),
        ConnectionResetError(),
    ):
        assert predicate(retriable), retriable
    for final in (
        api.NotFound("x"),
        api.Forbidden("x"),
        api.Unauthorized("x"),
        api.BadRequest("x"),
        api.PreconditionFailed("x"),
        ValueError("x"),
    ):
        assert not predicate(final), final

    monkeypatch.delenv(storage.RETRY_DEADLINE_ENV, raising=False)
    monkeypatch.setattr(storage, "retry_deadline", None)
    assert storage.get_retry_deadline() == storage.DEFAULT_RETRY_DEADLINE == 120.0
    assert storage._retry()._timeout == 120.0
    monkeypatch.setenv(storage.RETRY_DEADLINE_ENV, "15")
    assert storage._retry()._timeout == 15.0
    monkeypatch.setattr(storage, "retry_deadline", 3)
    assert storage._retry()._timeout == 3.0


def test_a_missing_object_is_an_immediate_final_error(gcs, tmp_path):
    with pytest.raises(FerError, match="does not exist") as caught:
        storage.download_file(f"{PREFIX}/none.json", tmp_path / "none.json")
    assert not isinstance(caught.value, storage.TransientStorageError)
    with pytest.raises(FerError, match=r"Could not download gs://reliability/data/m\.keras") as caught:
        storage.download_object(f"{PREFIX}/m.keras", tmp_path / "m.keras")
    assert not isinstance(caught.value, storage.TransientStorageError)


def test_repeatable_pipeline_steps_carry_set_retry_and_registration_does_not(tmp_path):
    import yaml

    from pipelines.compile import compile_pipelines

    vertex, _ = compile_pipelines(tmp_path, "cpu:t", "gpu:t", commit="t")
    doc = yaml.safe_load(vertex.read_text())
    tasks = doc["root"]["dag"]["tasks"]
    retries = {name: task.get("retryPolicy", {}).get("maxRetryCount", 0) for name, task in tasks.items()}
    for name in ("ingest", "split-and-weight", "train-frozen", "fine-tune", "evaluate"):
        assert retries[name] >= 2, (name, retries)
    assert "retryPolicy" not in doc["components"]["comp-condition-1"]["dag"]["tasks"]["register"]
    assert tasks["ingest"]["retryPolicy"]["backoffDuration"] == "30s"


def test_training_components_back_up_beside_their_output_model(tmp_path):
    import inspect

    from components import fine_tune, train_frozen
    from fer_pipeline.component_io import phase_config

    for component in (train_frozen, fine_tune):
        assert "phase_config(preset, recipe, model.path)" in inspect.getsource(component.python_func)
    assert phase_config("", {}, tmp_path / "model").backup_dir == f"{tmp_path / 'model'}-backup"


def test_only_storage_talks_to_cloud_storage():
    root = Path(__file__).resolve().parents[1]
    users = sorted(
        str(path.relative_to(root))
        for folder in ("src", "components", "pipelines")
        for path in (root / folder).rglob("*.py")
        if "google.cloud import storage" in path.read_text() or "google.cloud.storage" in path.read_text()
    )
    assert users == ["src/fer_pipeline/storage.py"], users


def test_bucket_expires_what_interrupted_ingests_staged():
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 not installed (dev dependency)")
    root = Path(__file__).resolve().parents[1] / "infra" / "gcp"
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    with (root / "storage.tf").open() as handle:
        bucket = hcl2.load(handle, serialization_options=options)["resource"][0]["google_storage_bucket"][
            "pipeline_root"
        ]
    with (root / "outputs.tf").open() as handle:
        outputs = {
            k: v for block in hcl2.load(handle, serialization_options=options)["output"] for k, v in block.items()
        }
    data_prefix = outputs["data_prefix"]["value"].split("}/", 1)[1]  # gs://${bucket}/data -> data
    staged = storage.staging_prefix(f"gs://b/{data_prefix}/datasets/KEY")
    expected_prefix = staged.name.rsplit("/", 1)[0] + "/"
    rules = [r for r in bucket["lifecycle_rule"] if r["condition"][0].get("matches_prefix") == [expected_prefix]]
    assert expected_prefix == f"{data_prefix}/datasets/{storage.STAGING}/"
    assert len(rules) == 1 and rules[0]["action"][0]["type"] == "Delete" and rules[0]["condition"][0]["age"] == 1
