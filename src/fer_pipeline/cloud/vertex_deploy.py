"""Serve a registered model on Vertex AI: deploy one version to an endpoint, or score
images with a batch prediction job.

Each call is a request message (``aiplatform_v1``) built by a pure function, so that a
dry run prints exactly what a real run sends (``request_json``). What the requests
depend on is looked up first, read-only: the model family's resource name (the Vertex
model that ``vertex_registry`` adds versions to), which version an alias names, and the
endpoint's current deployments and traffic. A plan holds the lookups' results and the
requests; ``run_deploy`` and ``run_batch_prediction`` send them.

Versions are named by alias (``champion``, ``challenger``) or number and pinned to the
version id the alias points at when planned, so the plan that was printed is the
version that is deployed even if the alias moves meanwhile.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.cloud import aiplatform_v1
from google.protobuf import json_format

from fer_pipeline.errors import FerError

log = logging.getLogger(__name__)

DEPLOY_TIMEOUT_S = 40 * 60  # a first deployment provisions machines: 10-20 minutes is usual
ENDPOINT_TIMEOUT_S = 5 * 60
BATCH_KEY_FIELD = "key"  # the image URI on each instance line; Vertex keeps it out of the model's input
_ENDPOINT_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/endpoints/[^/]+$")
_ENDPOINT_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Lookups only read, so they are retried on transient errors; creates and deploys are not.
_READ_RETRY = api_retry.Retry(
    predicate=api_retry.if_transient_error, initial=1.0, multiplier=2.0, maximum=30.0, timeout=120.0
)


@dataclass(frozen=True)
class Clients:
    models: aiplatform_v1.ModelServiceClient
    endpoints: aiplatform_v1.EndpointServiceClient
    jobs: aiplatform_v1.JobServiceClient


def make_clients(location: str, credentials=None) -> Clients:
    """Clients for the region's API host (Vertex serves each region at its own host)."""
    options = {"api_endpoint": f"{location}-aiplatform.googleapis.com"}
    return Clients(
        models=aiplatform_v1.ModelServiceClient(client_options=options, credentials=credentials),
        endpoints=aiplatform_v1.EndpointServiceClient(client_options=options, credentials=credentials),
        jobs=aiplatform_v1.JobServiceClient(client_options=options, credentials=credentials),
    )


@dataclass(frozen=True)
class Machines:
    """What serves the model: a machine type and how many replicas."""

    machine_type: str = "n1-standard-2"
    min_replicas: int = 1
    max_replicas: int = 1


# ------------------------------------------------------------------ lookups (read-only)
def parent_of(project: str, location: str) -> str:
    return f"projects/{project}/locations/{location}"


def aip_string(text: str) -> str:
    """``text`` as an AIP-160 filter string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_model_version(clients: Clients, parent: str, display_name: str, version: str) -> aiplatform_v1.Model:
    """The version ``version`` (alias or number) of the Vertex model named ``display_name``.

    Raises:
        FerError: no model of that name, or it has no such version; the message says what exists.
    """
    request = aiplatform_v1.ListModelsRequest(parent=parent, filter=f"display_name={aip_string(display_name)}")
    families = list(clients.models.list_models(request=request, retry=_READ_RETRY))
    if not families:
        raise FerError(
            f"No Vertex model named {display_name!r} in {parent}; register one first (the pipeline's register "
            "step with registry=vertex), or name the model the registry holds."
        )
    # As vertex_registry adds versions: to the model holding the champion when several share the name.
    with_champion = [m for m in families if "champion" in m.version_aliases]
    family = (with_champion or families)[0].name.split("@")[0]
    if len(families) > 1:
        log.warning("%d Vertex models are named %r; using %s.", len(families), display_name, family)
    try:
        return clients.models.get_model(name=f"{family}@{version}", retry=_READ_RETRY)
    except api_exceptions.NotFound:
        aliases = sorted({a for m in families for a in m.version_aliases}) or ["none"]
        raise FerError(
            f"Vertex model {display_name!r} ({family}) has no version {version!r}; its default version's "
            f"aliases: {', '.join(aliases)}. Use champion, challenger or a version number."
        ) from None


def find_endpoint(clients: Clients, parent: str, endpoint: str) -> aiplatform_v1.Endpoint | None:
    """The endpoint ``endpoint`` names (a resource name, or a display name to reuse); None when
    no endpoint has that display name. Two of the same name: the oldest, with a warning."""
    if _ENDPOINT_NAME.match(endpoint):
        try:
            return clients.endpoints.get_endpoint(name=endpoint, retry=_READ_RETRY)
        except api_exceptions.NotFound:
            raise FerError(f"Endpoint {endpoint} does not exist; pass an existing one or a display name.") from None
    request = aiplatform_v1.ListEndpointsRequest(
        parent=parent, filter=f"display_name={aip_string(endpoint)}", order_by="create_time"
    )
    found = list(clients.endpoints.list_endpoints(request=request, retry=_READ_RETRY))
    if len(found) > 1:
        log.warning("%d endpoints are named %r; using the oldest, %s.", len(found), endpoint, found[0].name)
    return found[0] if found else None


# ------------------------------------------------------------------ requests (pure)
def create_endpoint_request(
    parent: str, display_name: str, *, labels: Mapping[str, str], encryption_key: str = ""
) -> aiplatform_v1.CreateEndpointRequest:
    """A new endpoint named ``display_name``; its id is the name too when Vertex allows it
    (lowercase letters, digits, '-'), so its resource name is known before it exists."""
    endpoint = aiplatform_v1.Endpoint(display_name=display_name, labels=dict(labels))
    if encryption_key:
        endpoint.encryption_spec = aiplatform_v1.EncryptionSpec(kms_key_name=encryption_key)
    return aiplatform_v1.CreateEndpointRequest(
        parent=parent, endpoint=endpoint, endpoint_id=display_name if _ENDPOINT_ID.match(display_name) else ""
    )


def traffic_split(current: Mapping[str, int], percent: int) -> dict[str, int]:
    """The endpoint's traffic after deploying one more model with ``percent`` of it: ``"0"``
    (Vertex's name for the model being deployed) gets ``percent``, the models serving now
    share the rest in their present proportions (largest remainders, so it sums to 100).

    Raises:
        FerError: ``percent`` below 100 on an endpoint that serves nothing yet.
    """
    serving = {key: share for key, share in current.items() if share > 0}
    if percent == 100:
        return {"0": 100}
    if not serving:
        raise FerError(
            f"TRAFFIC={percent} leaves {100 - percent}% to the models the endpoint serves, but it serves none: "
            "deploy the champion first (TRAFFIC=100), then the challenger with a share."
        )
    rest, total = 100 - percent, sum(serving.values())
    exact = {key: share * rest / total for key, share in serving.items()}
    split = {key: int(value) for key, value in exact.items()}
    by_remainder = sorted(exact, key=lambda key: (split[key] - exact[key], key))
    for key in by_remainder[: rest - sum(split.values())]:
        split[key] += 1
    return {"0": percent, **split}


def deploy_model_request(
    endpoint_name: str,
    version: aiplatform_v1.Model,
    machines: Machines,
    split: Mapping[str, int],
    *,
    service_account: str = "",
) -> aiplatform_v1.DeployModelRequest:
    """Deploy exactly ``version`` (its id pinned in the model name) on dedicated machines."""
    family = version.name.split("@")[0]
    deployed = aiplatform_v1.DeployedModel(
        model=f"{family}@{version.version_id}",
        display_name=f"{version.display_name}-v{version.version_id}",
        dedicated_resources=aiplatform_v1.DedicatedResources(
            machine_spec=aiplatform_v1.MachineSpec(machine_type=machines.machine_type),
            min_replica_count=machines.min_replicas,
            max_replica_count=machines.max_replicas,
        ),
        service_account=service_account,
    )
    return aiplatform_v1.DeployModelRequest(endpoint=endpoint_name, deployed_model=deployed, traffic_split=dict(split))


def batch_prediction_request(
    parent: str,
    version: aiplatform_v1.Model,
    instances_uri: str,
    output_prefix: str,
    machines: Machines,
    *,
    display_name: str,
    labels: Mapping[str, str],
    service_account: str = "",
    encryption_key: str = "",
) -> aiplatform_v1.CreateBatchPredictionJobRequest:
    """A job over a JSONL of ``{"key": URI, "image_bytes": {"b64": ...}}`` lines.

    ``key_field`` keeps the URI out of what the model gets (its serving signature takes
    ``image_bytes`` only) and puts it on each output line instead of the image, so results
    name their image and do not repeat its bytes.
    """
    family = version.name.split("@")[0]
    job = aiplatform_v1.BatchPredictionJob(
        display_name=display_name,
        model=f"{family}@{version.version_id}",
        input_config=aiplatform_v1.BatchPredictionJob.InputConfig(
            instances_format="jsonl", gcs_source=aiplatform_v1.GcsSource(uris=[instances_uri])
        ),
        instance_config=aiplatform_v1.BatchPredictionJob.InstanceConfig(
            instance_type="object", key_field=BATCH_KEY_FIELD
        ),
        output_config=aiplatform_v1.BatchPredictionJob.OutputConfig(
            predictions_format="jsonl", gcs_destination=aiplatform_v1.GcsDestination(output_uri_prefix=output_prefix)
        ),
        dedicated_resources=aiplatform_v1.BatchDedicatedResources(
            machine_spec=aiplatform_v1.MachineSpec(machine_type=machines.machine_type),
            starting_replica_count=machines.min_replicas,
            max_replica_count=machines.max_replicas,
        ),
        labels=dict(labels),
        service_account=service_account,
    )
    if encryption_key:
        job.encryption_spec = aiplatform_v1.EncryptionSpec(kms_key_name=encryption_key)
    return aiplatform_v1.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)


def request_json(request) -> dict[str, Any]:
    """A request message as the JSON the API receives (field names as in the proto)."""
    return json_format.MessageToDict(type(request).pb(request), preserving_proto_field_name=True)


# ------------------------------------------------------------------ deploy
@dataclass
class DeployPlan:
    version: aiplatform_v1.Model
    create_endpoint: aiplatform_v1.CreateEndpointRequest | None  # None: the endpoint exists
    deploy: aiplatform_v1.DeployModelRequest

    def to_json(self) -> dict[str, Any]:
        deploy = request_json(self.deploy)
        if not self.deploy.endpoint:  # Vertex names the endpoint create_endpoint makes
            deploy["endpoint"] = "<the endpoint create_endpoint makes>"
        return {
            "model_version": self.deploy.deployed_model.model,
            "model_version_aliases": list(self.version.version_aliases),
            "create_endpoint": request_json(self.create_endpoint) if self.create_endpoint else None,
            "deploy_model": deploy,
        }


def plan_deploy(
    clients: Clients,
    *,
    project: str,
    location: str,
    model: str,
    version: str,
    endpoint: str,
    machines: Machines,
    traffic: int,
    labels: Mapping[str, str],
    service_account: str = "",
    encryption_key: str = "",
) -> DeployPlan:
    """Look up the version and the endpoint (reads only) and build the requests.

    Raises:
        FerError: no such model or version; the version is already on the endpoint; a
            share below 100% for an endpoint that serves nothing.
    """
    parent = parent_of(project, location)
    found_version = find_model_version(clients, parent, model, version)
    existing = find_endpoint(clients, parent, endpoint)
    if existing is None:
        create = create_endpoint_request(parent, endpoint, labels=labels, encryption_key=encryption_key)
        endpoint_name = f"{parent}/endpoints/{create.endpoint_id}" if create.endpoint_id else ""
        current: Mapping[str, int] = {}
    else:
        check_not_deployed(existing, found_version)
        create, endpoint_name, current = None, existing.name, dict(existing.traffic_split)
    split = traffic_split(current, traffic)
    deploy = deploy_model_request(endpoint_name, found_version, machines, split, service_account=service_account)
    return DeployPlan(found_version, create, deploy)


def check_not_deployed(endpoint: aiplatform_v1.Endpoint, version: aiplatform_v1.Model) -> None:
    """A second deployment of the same version would only double its cost."""
    family = version.name.split("@")[0]
    for deployed in endpoint.deployed_models:
        if deployed.model.split("@")[0] == family and deployed.model_version_id == version.version_id:
            share = endpoint.traffic_split.get(deployed.id, 0)
            raise FerError(
                f"Version {version.version_id} of {version.display_name!r} is already deployed on {endpoint.name} "
                f"(deployed model {deployed.id}, {share}% of traffic); nothing sent. Change its share with "
                "`gcloud ai endpoints update --traffic-split` or deploy another version."
            )


def run_deploy(clients: Clients, plan: DeployPlan, *, timeout: float = DEPLOY_TIMEOUT_S) -> dict[str, Any]:
    """Create the endpoint when needed, deploy, wait for both; returns the endpoint and deployed model id."""
    if plan.create_endpoint is not None:
        endpoint = clients.endpoints.create_endpoint(request=plan.create_endpoint).result(timeout=ENDPOINT_TIMEOUT_S)
        log.info("Created endpoint %s", endpoint.name)
        plan.deploy.endpoint = endpoint.name  # the same name when the id was chosen; Vertex's otherwise
    response = clients.endpoints.deploy_model(request=plan.deploy).result(timeout=timeout)
    return {
        "endpoint": plan.deploy.endpoint,
        "deployed_model_id": response.deployed_model.id,
        "model_version": plan.deploy.deployed_model.model,
        "traffic_split": dict(plan.deploy.traffic_split),
    }


# ------------------------------------------------------------------ batch prediction
def run_batch_prediction(
    clients: Clients, request: aiplatform_v1.CreateBatchPredictionJobRequest
) -> aiplatform_v1.BatchPredictionJob:
    """Submit the job (it runs on Vertex; this returns once it is created)."""
    job = clients.jobs.create_batch_prediction_job(request=request)
    log.info("Created batch prediction job %s", job.name)
    return job
