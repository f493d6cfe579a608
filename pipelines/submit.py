"""Submit the compiled pipeline to Vertex AI Pipelines or to KFP (on kind or GKE).

    python -m pipelines.submit [--target vertex|kind] [--config config/submit.env]
                               [--set KEY=VALUE ...] [--param NAME=VALUE ...] [--dry-run]

``make submit`` runs it (TARGET=, CONFIG=, DRY_RUN=1). Settings come from the config
file, then the environment, then ``--set``/``--param`` (pipelines/settings.py lists the
keys). ``--dry-run`` prints the exact request as JSON and sends nothing; it needs no
credentials and fetches nothing (a template URL is named, not checked). ENABLE_CACHING=false
turns caching off; true keeps the compiled settings (ingest and register are never cached).

vertex: ``aiplatform.PipelineJob`` from build/pipeline.yaml (or TEMPLATE), submitted
        with the pipeline service account and optional network; prints the console URL.
        EXPERIMENT and TENSORBOARD reach the run as the pipeline parameters
        ``experiment`` and ``tensorboard``: the evaluation step logs the run's
        parameters and metrics to that Vertex AI experiment (one row per run in its
        comparison table), the training steps stream their TensorBoard logs.
kind:   ``kfp.Client(host=KFP_HOST).create_run_from_pipeline_package`` with
        build/pipeline-kfp.yaml (the pipeline plus its kfp-kubernetes platform spec).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml
from google.api_core.exceptions import GoogleAPIError

from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError
from pipelines.settings import (
    COMPILED_ON_KIND,
    DEFAULT_CONFIG,
    TARGETS,
    SubmitSettings,
    cli_overrides,
    coerce,
    is_remote,
    load_pipeline_spec,
    load_settings,
    parameter_specs,
)


def default_labels(settings: SubmitSettings) -> dict[str, str]:
    """``app`` and, where the template records it, ``commit`` (labels given win)."""
    labels = {"app": "fer-pipeline"}
    if settings.template_commit:
        labels["commit"] = settings.template_commit
    return {**labels, **settings.labels}


def caching_override(settings: SubmitSettings) -> bool | None:
    """``enable_caching=`` for aiplatform.PipelineJob and kfp.Client: False (ENABLE_CACHING=false)
    turns caching off for every step; otherwise None keeps the compiled per-task settings. True
    would rewrite every task, ingest and register included, which must never be cached (a cached
    ingest reuses an old dataset when the source at the same path changed; a cached register
    skips the registration); the compiled settings already cache every other step."""
    return False if settings.enable_caching is False else None


# ------------------------------------------------------------------ Vertex AI
class TemplateUnreachable(Exception):
    """The template URL could not be fetched: its one line, exit 1."""


def build_vertex_job(settings: SubmitSettings, credentials=None, *, dry_run: bool = False):
    """The ``aiplatform.PipelineJob`` for these settings (nothing is sent). aiplatform fetches a
    template URL itself; a dry run fetches nothing (it is offline): the job is built from a
    stand-in spec and the request names the URL instead."""
    from google.cloud import aiplatform

    with _template_path(settings, dry_run=dry_run) as template_path:
        try:
            return aiplatform.PipelineJob(
                display_name=settings.display_name or settings.pipeline_name,
                template_path=template_path,
                job_id=settings.job_id or None,
                pipeline_root=settings.pipeline_root,
                parameter_values=dict(settings.parameters),
                enable_caching=caching_override(settings),
                encryption_spec_key_name=settings.encryption_key or None,
                labels=default_labels(settings),
                credentials=credentials,
                project=settings.project,
                location=settings.region,
            )
        except ValueError as exc:  # aiplatform's own checks, e.g. a region Vertex AI does not have
            raise ConfigError(f"error: Vertex AI refuses these settings: {exc}") from None
        except (OSError, GoogleAPIError) as exc:  # a template URL not found, refused or unreachable
            if not is_remote(settings.template):
                raise
            raise TemplateUnreachable(
                f"error: TEMPLATE={settings.template} could not be fetched ({exc}); check the URL and that your "
                "credentials can read it, or set TEMPLATE to the local build/pipeline.yaml."
            ) from exc


@contextlib.contextmanager
def _template_path(settings: SubmitSettings, *, dry_run: bool):
    """The template aiplatform reads: the setting itself, or in a dry run with a URL a stand-in."""
    if not (dry_run and is_remote(settings.template)):
        yield str(settings.template)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(_stand_in_spec(settings)))
        yield str(path)


def _stand_in_spec(settings: SubmitSettings) -> dict[str, Any]:
    """The least PipelineSpec aiplatform builds a job from: the name and the given parameters."""
    return {
        "pipelineInfo": {"name": settings.pipeline_name},
        "root": {
            "inputDefinitions": {"parameters": {name: {"parameterType": "STRING"} for name in settings.parameters}}
        },
        "schemaVersion": "2.1.0",
    }


def vertex_request(job, settings: SubmitSettings, *, dry_run: bool = False) -> dict[str, Any]:
    """The CreatePipelineJob request that ``job.submit(...)`` sends, as a JSON-able dict. In a
    dry run with a template URL, the spec (not fetched) is left out and the URL named."""
    from google.protobuf import json_format

    resource = type(job._gca_resource).pb(job._gca_resource)
    message = type(resource)()
    message.CopyFrom(resource)
    if settings.service_account:
        message.service_account = settings.service_account
    if settings.network:
        message.network = settings.network
    request = {
        "parent": job._parent,
        "pipeline_job_id": job.job_id,
        "pipeline_job": json_format.MessageToDict(message, preserving_proto_field_name=True),
        "experiment": settings.experiment or None,
    }
    if dry_run:
        mark_unfetched_template(request, request["pipeline_job"], settings)
    return request


def mark_unfetched_template(request: dict[str, Any], pipeline_job: dict[str, Any], settings: SubmitSettings) -> None:
    """A dry run with a template URL built its job from a stand-in spec: leave that out of the
    printed request and name the URL instead. Nothing to do for a local template."""
    if is_remote(settings.template):
        pipeline_job.pop("pipeline_spec", None)
        request["template"] = f"{settings.template}: not fetched in a dry run (offline); checked when sent"


def submit_vertex(settings: SubmitSettings, *, dry_run: bool = False, credentials=None, out=None) -> dict:
    """Build the job; print the request (dry run) or submit it and print the console URL."""
    out = out or sys.stdout
    if dry_run and credentials is None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # a dry run never calls Google
    job = build_vertex_job(settings, credentials=credentials, dry_run=dry_run)
    request = vertex_request(job, settings, dry_run=dry_run)
    check_images(request["pipeline_job"], settings, dry_run=dry_run)
    if dry_run:
        print(json.dumps(request, indent=2, sort_keys=True), file=out)
        return request
    # No experiment= here: the evaluation step logs the run to EXPERIMENT itself (the
    # pipeline parameter), and an association as well would make two rows per run.
    job.submit(service_account=settings.service_account or None, network=settings.network or None)
    print(f"submitted {job.resource_name}", file=out)
    print(f"console: {job._dashboard_uri()}", file=out)
    return request


def check_images(pipeline_job: dict[str, Any], settings: SubmitSettings, *, dry_run: bool) -> None:
    """Refuse a job whose images Vertex AI cannot pull (``local_images``); a dry run warns."""
    if local := local_images(pipeline_job):
        problem = (
            f"{settings.template} runs images with no registry host ({', '.join(local)}), which Vertex AI cannot "
            "pull: set REGISTRY= (make infra-config writes it), then `make build push compile`."
        )
        if not dry_run:
            raise ConfigError(f"error: {problem}")
        print(f"warning: {problem}", file=sys.stderr)


def local_images(pipeline_job: dict[str, Any]) -> list[str]:
    """The job's container images whose name starts with no registry host (a first part with
    a '.' or a ':', or localhost, as Docker reads names): `make build` without REGISTRY= names
    them so, and only the machine that built them has them."""
    executors = (pipeline_job.get("pipeline_spec") or {}).get("deploymentSpec", {}).get("executors", {})
    images = {executor.get("container", {}).get("image", "") for executor in executors.values()}
    return sorted(image for image in images if image and not re.match(r"^(localhost|[^/]*[.:][^/]*)/", image))


# ------------------------------------------------------------------ KFP (kind / GKE)
def kfp_request(settings: SubmitSettings) -> dict[str, Any]:
    """Keyword arguments of ``kfp.Client.create_run_from_pipeline_package`` plus the host."""
    kwargs: dict[str, Any] = {
        "pipeline_file": str(settings.template),
        "arguments": dict(settings.parameters),
        "run_name": settings.display_name or None,
        "experiment_name": settings.kfp_experiment or None,
        "namespace": settings.kfp_namespace or None,
        "pipeline_root": settings.kfp_pipeline_root or None,
        "enable_caching": caching_override(settings),
        "service_account": settings.kfp_service_account or None,
    }
    # What the run will use: the compiled defaults (on kind: the in-cluster emulator and the
    # registry volume) under the arguments given, less the GPU parameters the KFP file's
    # compiled request overrides. Shown, not sent.
    defaults = {
        name: coerce(spec["defaultValue"], spec.get("parameterType", ""))
        for name, spec in parameter_specs(load_pipeline_spec(settings.template)).items()
        if "defaultValue" in spec and name not in COMPILED_ON_KIND
    }
    return {
        "host": settings.kfp_host,
        "create_run_from_pipeline_package": kwargs,
        "parameters_in_effect": defaults | dict(settings.parameters),
    }


class KfpUnreachable(Exception):
    """KFP's API did not take the run: its one line, exit 1."""


def submit_kfp(settings: SubmitSettings, *, dry_run: bool = False, out=None) -> dict:
    out = out or sys.stdout
    request = kfp_request(settings)
    if dry_run:
        print(json.dumps(request, indent=2, sort_keys=True), file=out)
        return request
    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    host = settings.kfp_host
    # kfp.Client warns on every start that it needs KFP >= 2.0.0-beta.2: noise under the one-line answer
    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    try:
        client = kfp.Client(host=host, namespace=settings.kfp_namespace or "kubeflow")
        result = client.create_run_from_pipeline_package(**request["create_run_from_pipeline_package"])
    except urllib3.exceptions.HTTPError as exc:  # connection refused, name unknown, timeouts (after urllib3's retries)
        reason = getattr(exc, "reason", None) or exc
        raise KfpUnreachable(
            f"error: KFP at KFP_HOST={host} did not answer ({reason}); for a kind cluster, start "
            "`make kfp-forward` in another terminal, or set KFP_HOST to your KFP API's address."
        ) from exc
    except ApiException as exc:
        raise KfpUnreachable(f"error: KFP at KFP_HOST={host} refused the run: HTTP {exc.status} {exc.reason}.") from exc
    run_id = getattr(result, "run_id", None)
    print(f"submitted run {run_id}", file=out)
    if run_id:
        print(f"ui: {settings.kfp_host.rstrip('/')}/#/runs/details/{run_id}", file=out)
    return request


def submit(settings: SubmitSettings, *, dry_run: bool = False, credentials=None, out=None) -> dict:
    if settings.target == "vertex":
        return submit_vertex(settings, dry_run=dry_run, credentials=credentials, out=out)
    return submit_kfp(settings, dry_run=dry_run, out=out)


# ------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipelines.submit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="vertex", choices=TARGETS)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="KEY=VALUE, JSON or YAML settings file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="one pipeline parameter")
    parser.add_argument("--dry-run", action="store_true", help="print the request as JSON, send nothing")
    args = parser.parse_args(argv)
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.exceptions import GoogleAuthError

    try:
        overrides = cli_overrides(args.set, args.param)
        settings = load_settings(args.target, args.config, overrides=overrides)
        submit(settings, dry_run=args.dry_run)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except GoogleAuthError as exc:
        print(
            f"error: no usable Google Cloud credentials ({exc}); run `gcloud auth application-default login`, "
            "or DRY_RUN=1 to see the request without sending it.",
            file=sys.stderr,
        )
        return 1
    except GoogleAPICallError as exc:
        print(f"error: Vertex AI refused the request: {exc}", file=sys.stderr)
        return 1
    except (KfpUnreachable, TemplateUnreachable) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
