"""Vertex registration: the exact upload and evaluation-import requests, with the client mocked."""

from __future__ import annotations

import json
from unittest import mock

import pytest

aiplatform = pytest.importorskip("google.cloud.aiplatform")
from google.api_core import exceptions as api_exceptions  # noqa: E402
from google.cloud import aiplatform_v1  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from fer_pipeline.cloud import vertex_registry  # noqa: E402
from fer_pipeline.cloud.vertex_registry import (  # noqa: E402
    CLASSIFICATION_SCHEMA_URI,
    register_vertex_model,
    sanitize_labels,
)
from fer_pipeline.errors import ConfigError, FerError  # noqa: E402

PROJECT, LOCATION = "my-project", "europe-west4"
FAMILY = f"projects/{PROJECT}/locations/{LOCATION}/models/123"
SERVING_IMAGE = "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
ARTIFACT_URI = "gs://bucket/runs/42/serving"
LABELS = {"dataset_checksum": "sha256:" + "a" * 64, "commit": "0123ABC", "Run.Name": "Nightly Build #7"}
SANITISED = {"dataset_checksum": "sha256_" + "a" * 56, "commit": "0123abc", "run_name": "nightly_build_7"}
REAL_MODEL_CLASS = aiplatform.Model  # captured before the fixtures patch it
METRICS = {
    "accuracy": 0.61,
    "macro_f1": 0.55,
    "weighted_f1": 0.60,
    "macro_roc_auc": 0.88,
    "per_class": {"happy": {"f1": 0.8}},
    "confusion_matrix": [[1, 0], [0, 1]],
}
EVALUATION = {
    "display_name": "fer evaluation run 42",
    "metrics_schema_uri": CLASSIFICATION_SCHEMA_URI,
    "metrics": {
        "auRoc": 0.88,
        "logLoss": 1.1,
        "confusionMatrix": {"annotationSpecs": [{"displayName": "angry"}], "rows": [[3.0]]},
    },
}


def version_mock(resource_name: str, version_id: str, aliases: list[str], description: str = ""):
    model = mock.create_autospec(REAL_MODEL_CLASS, instance=True)
    model.resource_name = resource_name
    model.version_id = version_id
    model.versioned_resource_name = f"{resource_name}@{version_id}"
    model.version_aliases = aliases
    model.version_description = description
    return model


def stored_description(macro_f1: float) -> str:
    return json.dumps({"primary_metric": "macro_f1", "metrics": {"macro_f1": macro_f1}, "labels": {}})


@pytest.fixture()
def vertex():
    """aiplatform.init, aiplatform.Model and the v1 ModelServiceClient, all mocked."""
    with (
        mock.patch("google.cloud.aiplatform.init", autospec=True) as init,
        mock.patch("google.cloud.aiplatform.Model", autospec=True) as model_cls,
        mock.patch("google.cloud.aiplatform_v1.ModelServiceClient", autospec=True) as client_cls,
    ):
        model_cls.upload.return_value = version_mock(FAMILY, "4", ["challenger"])
        client_cls.return_value.import_model_evaluation.return_value = aiplatform_v1.ModelEvaluation(
            name=f"{FAMILY}/evaluations/99"
        )
        yield mock.Mock(init=init, Model=model_cls, client_cls=client_cls, client=client_cls.return_value)


def register(**overrides):
    kwargs = dict(
        project=PROJECT,
        location=LOCATION,
        display_name="fer-densenet169",
        artifact_uri=ARTIFACT_URI,
        serving_image=SERVING_IMAGE,
        metrics=METRICS,
        evaluation=EVALUATION,
        labels=LABELS,
    )
    kwargs.update(overrides)
    return register_vertex_model(**kwargs)


def expected_description() -> str:
    return json.dumps(
        {
            "labels": LABELS,
            "metrics": {"accuracy": 0.61, "macro_f1": 0.55, "macro_roc_auc": 0.88, "weighted_f1": 0.60},
            "primary_metric": "macro_f1",
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def assert_uploaded(vertex, *, parent_model, alias, is_default, description=None):
    vertex.Model.upload.assert_called_once_with(
        display_name="fer-densenet169",
        description=description,
        parent_model=parent_model,
        artifact_uri=ARTIFACT_URI,
        serving_container_image_uri=SERVING_IMAGE,
        labels=SANITISED,
        version_aliases=[alias],
        is_default_version=is_default,
        version_description=expected_description(),
        sync=True,
    )


def assert_evaluation_imported(vertex):
    vertex.client_cls.assert_called_once_with(client_options={"api_endpoint": f"{LOCATION}-aiplatform.googleapis.com"})
    request = vertex.client.import_model_evaluation.call_args.kwargs["request"]
    assert request.parent == f"{FAMILY}@4"  # the new version, not the family
    sent = json_format.MessageToDict(aiplatform_v1.ModelEvaluation.pb(request.model_evaluation))
    assert sent == {
        "displayName": EVALUATION["display_name"],
        "metricsSchemaUri": CLASSIFICATION_SCHEMA_URI,
        "metrics": EVALUATION["metrics"],
    }


def test_better_model_becomes_champion_and_default(vertex):
    champion = version_mock(FAMILY, "3", ["default", "champion"], stored_description(0.50))
    vertex.Model.list.return_value = [champion]

    result = register()

    vertex.init.assert_called_once_with(project=PROJECT, location=LOCATION)
    vertex.Model.list.assert_called_once_with(filter='display_name="fer-densenet169"')
    assert_uploaded(vertex, parent_model=FAMILY, alias="champion", is_default=True)
    assert_evaluation_imported(vertex)
    assert result["is_champion"] is True and result["alias"] == "champion"
    assert result["previous_champion"] == f"{FAMILY}@3" and result["previous_champion_metric"] == 0.50
    assert result["evaluation_name"] == f"{FAMILY}/evaluations/99"
    assert result["versioned_resource_name"] == f"{FAMILY}@4"


def test_worse_model_becomes_challenger_and_not_default(vertex):
    champion = version_mock(FAMILY, "3", ["default", "champion"], stored_description(0.70))
    vertex.Model.list.return_value = [champion]

    result = register()

    assert_uploaded(vertex, parent_model=FAMILY, alias="challenger", is_default=False)
    assert_evaluation_imported(vertex)
    assert result["is_champion"] is False and result["alias"] == "challenger"


def test_first_upload_starts_a_new_family_as_champion(vertex):
    vertex.Model.list.return_value = []
    result = register()
    assert_uploaded(vertex, parent_model=None, alias="champion", is_default=True)
    assert result["previous_champion"] is None


def test_champion_that_is_not_the_default_is_looked_up_by_alias(vertex):
    default = version_mock(FAMILY, "5", ["default"])
    vertex.Model.list.return_value = [default]
    vertex.Model.return_value = version_mock(FAMILY, "3", ["champion"], stored_description(0.90))

    register()

    vertex.Model.assert_called_once_with(model_name=f"{FAMILY}@champion")
    assert_uploaded(vertex, parent_model=FAMILY, alias="challenger", is_default=False)


def test_family_without_champion_adds_a_champion_version(vertex):
    vertex.Model.list.return_value = [version_mock(FAMILY, "1", ["default"])]
    vertex.Model.side_effect = api_exceptions.NotFound("no alias champion")
    register()
    assert_uploaded(vertex, parent_model=FAMILY, alias="champion", is_default=True)


def test_unreadable_champion_description_keeps_the_champion(vertex, caplog):
    vertex.Model.list.return_value = [version_mock(FAMILY, "3", ["champion"], "hand-written notes")]
    register()
    assert_uploaded(vertex, parent_model=FAMILY, alias="challenger", is_default=False)
    assert "no readable metrics" in caplog.text


def test_camelcase_evaluation_without_schema_gets_the_classification_schema(vertex):
    vertex.Model.list.return_value = []
    register(evaluation={"displayName": "e", "metrics": {"auRoc": 0.5}})
    sent = vertex.client.import_model_evaluation.call_args.kwargs["request"].model_evaluation
    assert sent.metrics_schema_uri == CLASSIFICATION_SCHEMA_URI and sent.display_name == "e"


def test_bad_inputs_fail_before_anything_is_uploaded(vertex):
    with pytest.raises(ConfigError, match="not a Vertex ModelEvaluation"):
        register(evaluation={"metrics": {}, "no_such_field": 1})
    with pytest.raises(ConfigError, match="no 'metrics'"):
        register(evaluation={"display_name": "x"})
    with pytest.raises(ConfigError, match="no 'macro_f1'"):
        register(metrics={"accuracy": 0.9})
    vertex.Model.upload.assert_not_called()
    vertex.init.assert_not_called()


def test_failed_evaluation_import_names_the_registered_version(vertex):
    vertex.Model.list.return_value = []
    vertex.client.import_model_evaluation.side_effect = api_exceptions.PermissionDenied("denied")
    with pytest.raises(FerError, match=f"{FAMILY}@4 was registered, but importing its evaluation failed"):
        register()


def test_sanitize_labels_follows_vertex_rules():
    assert sanitize_labels(LABELS) == SANITISED
    assert sanitize_labels({"1st": "x" * 80}) == {"l_1st": "x" * 63}
    with pytest.raises(ConfigError, match="both become 'run_name'"):
        sanitize_labels({"run.name": "a", "Run Name": "b"})
    with pytest.raises(ConfigError, match="at most 64"):
        sanitize_labels({f"k{i}": "v" for i in range(65)})


def test_module_is_the_only_aiplatform_importer():
    """export, registry and predict stay importable without the Vertex SDK."""
    import ast
    from pathlib import Path

    import fer_pipeline

    package = Path(fer_pipeline.__file__).parent
    for name in ("export.py", "registry.py", "predict.py", "cli_models.py"):
        tree = ast.parse((package / name).read_text())
        imported = [
            (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in getattr(node, "names", [])
        ]
        assert not [m for m in imported if "aiplatform" in m], name
    assert vertex_registry.aiplatform is aiplatform


def test_family_lookup_retries_a_transient_error_only():
    with (
        mock.patch.object(
            vertex_registry.aiplatform.Model, "list", side_effect=[api_exceptions.ServiceUnavailable("x"), []]
        ) as listed,
        mock.patch("time.sleep"),
    ):
        assert vertex_registry.find_family_and_champion("fer") == (None, None)
    assert listed.call_count == 2
    with mock.patch.object(
        vertex_registry.aiplatform.Model, "list", side_effect=api_exceptions.PermissionDenied("no")
    ) as listed:
        with pytest.raises(api_exceptions.PermissionDenied):
            vertex_registry.find_family_and_champion("fer")
    assert listed.call_count == 1
