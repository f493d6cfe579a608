"""Vertex AI Experiments and TensorBoard with no cloud: the metadata service client is
replaced by an in-memory store (the requests the SDK sends are recorded with their
fields), the TensorBoard uploader by mocks."""

from __future__ import annotations

from unittest import mock

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform_v1.services.metadata_service import MetadataServiceClient
from google.cloud.aiplatform_v1.types import metadata_store as gca_store
from google.protobuf import json_format

from fer_pipeline import runs
from fer_pipeline.classes import CLASSES
from fer_pipeline.cloud import experiments
from fer_pipeline.errors import ConfigError

PROJECT, LOCATION = "my-project", "europe-west4"
STORE = f"projects/{PROJECT}/locations/{LOCATION}/metadataStores/default"


def _record(run_id="fer-emotion-training-20260101120000", lr=1e-4, accuracy=0.61) -> dict:
    metrics = {
        "accuracy": accuracy,
        "macro_f1": 0.55,
        "weighted_f1": 0.6,
        "macro_roc_auc": 0.88,
        "log_loss": 1.1,
        "public_test_accuracy": 0.6,
        "private_test_accuracy": None,
        "num_test_samples": 7178,
        "per_class": {name: {"f1": 0.1 * (k + 1)} for k, name in enumerate(CLASSES)},
    }
    histories = [
        {
            "phase": "frozen",
            "epochs_run": 3,
            "best_epoch": 2,
            "seconds": 100.0,
            "config": {"frozen_lr": lr, "finetune_lr": 2e-5, "weights": "imagenet", "dense_units": [256, 512]},
        },
        {
            "phase": "finetune",
            "epochs_run": 2,
            "best_epoch": 2,
            "seconds": 50.0,
            "config": {"frozen_lr": lr, "finetune_lr": 2e-5, "weights": "imagenet", "dense_units": [256, 512]},
        },
    ]
    params = histories[0]["config"] | {"dataset_sha256": "abc", "class_weighting": True}
    return runs.run_record(run_id=run_id, kind="pipeline", params=params, metrics=metrics, histories=histories)


class FakeMetadataService:
    """The MetadataService calls the SDK makes for experiments, against a dict of contexts."""

    METHODS = (
        "get_metadata_store",
        "get_context",
        "create_context",
        "update_context",
        "add_context_children",
        "get_artifact",
    )

    def __init__(self):
        self.contexts = {}
        self.requests = []  # (method, fields as dicts)

    def _log(self, method, **fields):
        self.requests.append((method, {k: _plain(v) for k, v in fields.items()}))

    def get_metadata_store(self, client, *, name, **_):
        self._log("get_metadata_store", name=name)
        return gca_store.MetadataStore(name=name)

    def get_context(self, client, *, name, **_):
        self._log("get_context", name=name)
        if name not in self.contexts:
            raise exceptions.NotFound(name)
        return self.contexts[name]

    def create_context(self, client, *, parent, context, context_id, **_):
        self._log("create_context", parent=parent, context=context, context_id=context_id)
        name = f"{parent}/contexts/{context_id}"
        if name in self.contexts:
            raise exceptions.AlreadyExists(name)
        context.name = name
        self.contexts[name] = context
        return context

    def update_context(self, client, *, context, **_):
        self._log("update_context", context=context)
        self.contexts[context.name] = context
        return context

    def add_context_children(self, client, *, context, child_contexts, **_):
        self._log("add_context_children", context=context, child_contexts=list(child_contexts))

    def get_artifact(self, client, *, name, **_):
        self._log("get_artifact", name=name)  # a run's TensorBoard-run artifact: none here
        raise exceptions.NotFound(name)

    def patches(self):
        faked = [
            mock.patch.object(MetadataServiceClient, method, autospec=True, side_effect=getattr(self, method))
            for method in self.METHODS
        ]
        # Any other call would go to the network: fail at once, naming it.
        others = [
            mock.patch.object(MetadataServiceClient, name, side_effect=AssertionError(f"unexpected call: {name}"))
            for name in (
                "create_artifact",
                "update_artifact",
                "list_artifacts",
                "create_execution",
                "get_execution",
                "update_execution",
                "query_context_lineage_subgraph",
                "list_contexts",
                "add_context_artifacts_and_executions",
                "add_execution_events",
                "delete_context",
            )
        ]
        return faked + others


def _plain(value):
    if hasattr(type(value), "pb"):
        return json_format.MessageToDict(type(value).pb(value), preserving_proto_field_name=True)
    return value


@pytest.fixture()
def metadata():
    fake = FakeMetadataService()
    patches = fake.patches()
    for patch in patches:
        patch.start()
    yield fake
    for patch in patches:
        patch.stop()


def _calls(fake, method):
    return [fields for name, fields in fake.requests if name == method]


def test_log_run_creates_experiment_and_run_with_params_and_metrics(metadata):
    record = _record()
    name = experiments.log_run(
        record, experiment="fer-exp", project=PROJECT, location=LOCATION, credentials=AnonymousCredentials()
    )
    run_id = f"fer-exp-{record['run_id']}"
    assert name == f"{STORE}/contexts/{run_id}"

    created = {c["context_id"]: c for c in _calls(metadata, "create_context")}
    assert set(created) == {"fer-exp", run_id}
    assert all(c["parent"] == STORE for c in created.values())
    assert created["fer-exp"]["context"]["schema_title"] == "system.Experiment"
    assert created[run_id]["context"]["schema_title"] == "system.ExperimentRun"
    assert created[run_id]["context"]["display_name"] == record["run_id"]
    (children,) = _calls(metadata, "add_context_children")
    assert children == {"context": f"{STORE}/contexts/fer-exp", "child_contexts": [name]}

    final = _calls(metadata, "update_context")[-1]["context"]["metadata"]
    params, metrics = final["_params"], final["_metrics"]
    assert params["frozen_lr"] == 1e-4 and params["finetune_lr"] == 2e-5  # the resolved recipe's rates
    assert params["weights"] == "imagenet" and params["dense_units"] == "[256, 512]"
    assert params["class_weighting"] == "true" and params["dataset_sha256"] == "abc"
    assert metrics["accuracy"] == pytest.approx(0.61) and metrics["macro_f1"] == pytest.approx(0.55)
    assert {f"f1_{c}" for c in CLASSES} <= set(metrics) and metrics["f1_surprise"] == pytest.approx(0.7)
    assert metrics["train_seconds"] == 150.0
    assert "private_test_accuracy" not in metrics  # undefined values are left out
    assert final["_state"] == "COMPLETE"


def test_second_run_reuses_the_experiment_and_a_retry_updates_the_run(metadata):
    kwargs = dict(experiment="fer-exp", project=PROJECT, location=LOCATION, credentials=AnonymousCredentials())
    experiments.log_run(_record("run-a", lr=1e-3), **kwargs)
    experiments.log_run(_record("run-b", lr=1e-4), **kwargs)
    experiments.log_run(_record("run-b", lr=1e-4, accuracy=0.7), **kwargs)  # a retried evaluation
    ids = [c["context_id"] for c in _calls(metadata, "create_context")]
    assert ids.count("fer-exp") == 1
    runs_in_store = {n: c for n, c in metadata.contexts.items() if c.schema_title == "system.ExperimentRun"}
    assert sorted(runs_in_store) == [f"{STORE}/contexts/fer-exp-run-a", f"{STORE}/contexts/fer-exp-run-b"]
    logged = json_format.MessageToDict(
        type(runs_in_store[f"{STORE}/contexts/fer-exp-run-b"]).pb(runs_in_store[f"{STORE}/contexts/fer-exp-run-b"])
    )["metadata"]
    assert logged["_metrics"]["accuracy"] == pytest.approx(0.7)
    a = json_format.MessageToDict(
        type(runs_in_store[f"{STORE}/contexts/fer-exp-run-a"]).pb(runs_in_store[f"{STORE}/contexts/fer-exp-run-a"])
    )["metadata"]
    assert a["_params"]["frozen_lr"] == 1e-3


def test_bad_names_are_refused_before_any_request(metadata):
    with pytest.raises(ConfigError, match="lowercase"):
        experiments.log_run(_record(), experiment="FER Exp", project=PROJECT, location=LOCATION)
    with pytest.raises(ConfigError, match="project"):
        experiments.log_run(_record(), experiment="fer-exp", project="", location=LOCATION)
    assert metadata.requests == []


def test_run_names_are_made_valid_and_short_enough():
    assert experiments.run_name("Fer_Run 1", "exp") == "fer-run-1"
    long = experiments.run_name("x" * 200, "e" * 20)
    assert len("e" * 20) + 1 + len(long) <= experiments.MAX_CONTEXT_ID


def test_log_run_or_warn_never_raises(caplog):
    assert experiments.log_run_or_warn(_record(), experiment="", project=PROJECT, location=LOCATION) is None
    with mock.patch.object(experiments, "log_run", side_effect=exceptions.PermissionDenied("no")):
        assert experiments.log_run_or_warn(_record(), experiment="x", project=PROJECT, location=LOCATION) is None
    assert "run.json" in caplog.text


# ------------------------------------------------------------------ TensorBoard uploader
TB = "projects/my-project/locations/europe-west4/tensorboards/123"


def test_vertex_upload_streams_the_logdir_and_stops(tmp_path):
    from google.cloud import aiplatform

    with (
        mock.patch.object(aiplatform, "init") as init,
        mock.patch.object(aiplatform, "start_upload_tb_log") as start,
        mock.patch.object(aiplatform, "end_upload_tb_log") as end,
        mock.patch.object(experiments.time, "sleep") as sleep,
    ):
        with experiments.vertex_upload(TB, tmp_path / "tb", experiment="FER exp", run_prefix="fer-run-1 frozen"):
            start.assert_called_once()
            end.assert_not_called()
    init.assert_called_once_with(project="my-project", location="europe-west4")
    assert start.call_args.kwargs == {
        "tensorboard_id": "123",
        "tensorboard_experiment_name": "fer-exp",
        "logdir": str(tmp_path / "tb"),
        "run_name_prefix": "fer-run-1-frozen-",
        "project": "my-project",
        "location": "europe-west4",
    }
    sleep.assert_called_once_with(experiments.UPLOAD_FLUSH_SECONDS)
    end.assert_called_once_with()


def test_vertex_upload_without_a_tensorboard_does_nothing(tmp_path):
    from google.cloud import aiplatform

    with mock.patch.object(aiplatform, "start_upload_tb_log", side_effect=AssertionError("no upload")):
        with experiments.vertex_upload("", tmp_path, experiment="x", run_prefix="y"):
            pass


def test_a_bad_tensorboard_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tensorboards/ID"):
        with experiments.vertex_upload("tb-123", tmp_path, experiment="x", run_prefix="y"):
            pass
