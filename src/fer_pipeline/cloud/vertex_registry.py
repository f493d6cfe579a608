"""Register a trained model in the Vertex AI Model Registry, gated on the champion.

All versions of one model family share a Vertex model (same ``display_name``; new
uploads pass ``parent_model``). The version aliases ``champion`` and ``challenger``
work as in the local registry (``fer_pipeline.registry``): a new version becomes
``champion`` and the default version only when ``champion_gate`` says it beats the
current champion on the primary metric; otherwise it becomes ``challenger``. Vertex
moves an alias that is already on another version, so no explicit removal is needed.

Where the metrics live: each version's ``version_description`` is a compact JSON
object ``{"primary_metric": ..., "metrics": {scalar metrics}, "labels": {original
labels}}``. Descriptions are free text, so the numbers and full-length labels (a
SHA-256 is 64 characters, one more than a label value may hold) survive exactly;
Vertex labels get the sanitised copies for filtering in the console. The full
evaluation (confusion matrix, per-class metrics) is imported as a ModelEvaluation
with the classification schema, so it shows on the version's Evaluate tab.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.cloud import aiplatform, aiplatform_v1
from google.protobuf import json_format

from fer_pipeline.errors import ConfigError, FerError
from fer_pipeline.registry import CHALLENGER, CHAMPION, DEFAULT_PRIMARY_METRIC, champion_gate, metric_value

log = logging.getLogger(__name__)

CLASSIFICATION_SCHEMA_URI = "gs://google-cloud-aiplatform/schema/modelevaluation/classification_metrics_1.0.0.yaml"
MAX_LABELS = 64
MAX_LABEL_LENGTH = 63
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]+")


def register_vertex_model(
    *,
    project: str,
    location: str,
    display_name: str,
    artifact_uri: str,
    serving_image: str,
    metrics: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    labels: Mapping[str, str],
    primary_metric: str = DEFAULT_PRIMARY_METRIC,
    description: str = "",
) -> dict[str, Any]:
    """Upload a SavedModel as a new version of ``display_name`` and import its evaluation.

    Args:
        project: Google Cloud project id.
        location: Vertex region, e.g. ``europe-west4``.
        display_name: the model family; versions are added to the Vertex model of this name.
        artifact_uri: ``gs://`` folder holding the SavedModel (``saved_model.pb``).
        serving_image: serving container, e.g. a Vertex prebuilt TF 2.15 CPU image.
        metrics: the evaluate step's ``metrics.json``; must hold ``primary_metric``.
        evaluation: the evaluate step's ``vertex_evaluation.json``, a ModelEvaluation as a
            dict (snake_case or camelCase keys).
        labels: e.g. ``{"dataset_checksum": ..., "commit": ...}``; sanitised to Vertex rules.
        primary_metric: what the champion gate compares; higher is better.
        description: the version's human description (the model card's headline and
            where the card is); ``version_description`` stays the machine-read metrics.

    Returns:
        ``resource_name``, ``version_id``, ``versioned_resource_name``, ``alias``,
        ``is_champion``, ``previous_champion`` (versioned name or None),
        ``previous_champion_metric``, ``primary_metric``, ``evaluation_name``.

    Raises:
        ConfigError: ``primary_metric`` missing, or ``evaluation`` is not a ModelEvaluation.
    """
    metric_value(metrics, primary_metric, "new model")
    model_evaluation = evaluation_to_proto(evaluation, default_display_name=f"{display_name} evaluation")
    aiplatform.init(project=project, location=location)

    family, champion = find_family_and_champion(display_name)
    champion_metrics = read_version_metrics(champion) if champion is not None else None
    wins = champion_gate(metrics, champion_metrics, primary_metric)
    alias = CHAMPION if wins else CHALLENGER

    model = aiplatform.Model.upload(
        display_name=display_name,
        parent_model=family.resource_name if family is not None else None,
        artifact_uri=artifact_uri,
        serving_container_image_uri=serving_image,
        description=description or None,
        labels=sanitize_labels(labels),
        version_aliases=[alias],
        is_default_version=wins,
        version_description=describe_version(metrics, primary_metric, labels),
        sync=True,
    )
    evaluation_name = import_evaluation(model.versioned_resource_name, model_evaluation, location)
    log.info(
        "Registered %s as %s (%s=%s; champion before: %s)",
        model.versioned_resource_name,
        alias,
        primary_metric,
        metrics[primary_metric],
        champion.versioned_resource_name if champion is not None else "none",
    )
    return {
        "resource_name": model.resource_name,
        "version_id": model.version_id,
        "versioned_resource_name": model.versioned_resource_name,
        "alias": alias,
        "is_champion": wins,
        "previous_champion": champion.versioned_resource_name if champion is not None else None,
        "previous_champion_metric": (champion_metrics or {}).get(primary_metric),
        "primary_metric": primary_metric,
        "evaluation_name": evaluation_name,
    }


# Read-only lookups are retried on transient errors (429, 5xx, connection resets) with
# backoff. Upload and evaluation import are not: a retry after a lost response could
# add a second version or evaluation.
_READ_RETRY = api_retry.Retry(
    predicate=api_retry.if_transient_error, initial=1.0, multiplier=2.0, maximum=30.0, timeout=120.0
)


def find_family_and_champion(display_name: str):
    """Return ``(family, champion)``: the Vertex model named ``display_name`` and its
    ``champion`` version, each None when absent.

    ``Model.list`` returns each model's default version, which is the champion in the
    normal flow; when someone moved the default by hand, the alias is looked up.
    """
    quoted = display_name.replace("\\", "\\\\").replace('"', '\\"')  # AIP-160 string literal
    models = _READ_RETRY(aiplatform.Model.list)(filter=f'display_name="{quoted}"')
    if not models:
        return None, None
    with_champion = [m for m in models if CHAMPION in (m.version_aliases or [])]
    if len(models) > 1:
        log.warning(
            "%d Vertex models are named %r; adding the version to %s.",
            len(models),
            display_name,
            (with_champion or models)[0].resource_name,
        )
    if with_champion:
        return with_champion[0], with_champion[0]
    family = models[0]
    try:
        return family, aiplatform.Model(model_name=f"{family.resource_name}@{CHAMPION}")
    except api_exceptions.NotFound:
        return family, None


def read_version_metrics(version) -> dict[str, Any]:
    """The metrics stored in a version's description; {} (with a warning) when unreadable."""
    text = version.version_description or ""
    try:
        metrics = json.loads(text)["metrics"]
        if not isinstance(metrics, dict):
            raise TypeError("metrics is not an object")
        return metrics
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(
            "Champion %s has no readable metrics in its version description (%s): %r",
            version.versioned_resource_name,
            exc,
            text[:200],
        )
        return {}


def describe_version(metrics: Mapping[str, Any], primary_metric: str, labels: Mapping[str, str]) -> str:
    """The version description: compact JSON of the scalar metrics and the original labels."""
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return json.dumps(
        {"primary_metric": primary_metric, "metrics": scalars, "labels": {str(k): str(v) for k, v in labels.items()}},
        sort_keys=True,
        separators=(",", ":"),
    )


def sanitize_label_value(value: str) -> str:
    """Lowercase, runs of characters outside ``[a-z0-9_-]`` as ``_``, at most 63 characters."""
    return _LABEL_INVALID.sub("_", str(value).lower())[:MAX_LABEL_LENGTH]


def sanitize_label_key(key: str) -> str:
    """A label value that also starts with a letter, as Vertex requires of keys."""
    cleaned = sanitize_label_value(key)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = ("l_" + cleaned)[:MAX_LABEL_LENGTH]
    return cleaned


def sanitize_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Make labels valid for Vertex (see ``sanitize_label_key`` / ``sanitize_label_value``).

    Raises:
        ConfigError: more than 64 labels, or two keys that sanitise to the same key.
    """
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"{len(labels)} labels given; Vertex allows at most {MAX_LABELS}.")
    result: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, value in labels.items():
        clean_key = sanitize_label_key(key)
        if clean_key in result:
            raise ConfigError(
                f"Labels {origin[clean_key]!r} and {key!r} both become {clean_key!r} under Vertex label rules; rename one."
            )
        result[clean_key] = sanitize_label_value(value)
        origin[clean_key] = key
    return result


def evaluation_to_proto(evaluation: Mapping[str, Any], *, default_display_name: str) -> aiplatform_v1.ModelEvaluation:
    """Parse the evaluation dict into a ModelEvaluation (before anything is uploaded, so a
    malformed file fails the step early). Missing ``metrics_schema_uri`` defaults to the
    classification schema; missing display name to ``default_display_name``.

    Raises:
        ConfigError: a key that is not a ModelEvaluation field, or no ``metrics``.
    """
    if "metrics" not in evaluation:
        raise ConfigError(
            f"The evaluation has no 'metrics' (keys: {', '.join(sorted(evaluation)) or 'none'}); "
            "pass the evaluate step's vertex_evaluation.json."
        )
    try:
        pb = json_format.ParseDict(dict(evaluation), aiplatform_v1.ModelEvaluation.pb(aiplatform_v1.ModelEvaluation()))
    except json_format.ParseError as exc:
        raise ConfigError(f"The evaluation is not a Vertex ModelEvaluation: {exc}") from exc
    model_evaluation = aiplatform_v1.ModelEvaluation.wrap(pb)
    if not model_evaluation.metrics_schema_uri:
        model_evaluation.metrics_schema_uri = CLASSIFICATION_SCHEMA_URI
    if not model_evaluation.display_name:
        model_evaluation.display_name = default_display_name
    return model_evaluation


def import_evaluation(versioned_model_name: str, model_evaluation: aiplatform_v1.ModelEvaluation, location: str) -> str:
    """Attach ``model_evaluation`` to one model version; return the evaluation's resource name."""
    client = aiplatform_v1.ModelServiceClient(client_options={"api_endpoint": f"{location}-aiplatform.googleapis.com"})
    request = aiplatform_v1.ImportModelEvaluationRequest(parent=versioned_model_name, model_evaluation=model_evaluation)
    try:
        response = client.import_model_evaluation(request=request)
    except api_exceptions.GoogleAPICallError as exc:
        raise FerError(
            f"Model {versioned_model_name} was registered, but importing its evaluation failed: {exc}. "
            "The version exists without metrics on its Evaluate tab; re-import or delete it."
        ) from exc
    return response.name
