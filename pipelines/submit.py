"""Submit the compiled pipeline to Vertex AI Pipelines or to KFP (on kind or GKE).

    python -m pipelines.submit [--target vertex|kind] [--config config/submit.env]
                               [--set KEY=VALUE ...] [--param NAME=VALUE ...] [--dry-run]

``make submit`` runs it (TARGET=, CONFIG=, DRY_RUN=1). Settings come from the config
file, then the environment, then ``--set``/``--param`` (pipelines/settings.py lists the
keys). ``--dry-run`` prints the exact request as JSON and sends nothing; it needs no
credentials.

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
import json
import sys
import warnings
from typing import Any

from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError
from pipelines.settings import (
    DEFAULT_CONFIG,
    TARGETS,
    SubmitSettings,
    cli_overrides,
    coerce,
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


# ------------------------------------------------------------------ Vertex AI
def build_vertex_job(settings: SubmitSettings, credentials=None):
    """The ``aiplatform.PipelineJob`` for these settings (nothing is sent)."""
    from google.cloud import aiplatform

    try:
        return aiplatform.PipelineJob(
            display_name=settings.display_name or settings.pipeline_name,
            template_path=str(settings.template),
            job_id=settings.job_id or None,
            pipeline_root=settings.pipeline_root,
            parameter_values=dict(settings.parameters),
            enable_caching=settings.enable_caching,
            encryption_spec_key_name=settings.encryption_key or None,
            labels=default_labels(settings),
            credentials=credentials,
            project=settings.project,
            location=settings.region,
        )
    except ValueError as exc:  # aiplatform's own checks, e.g. a region Vertex AI does not have
        raise ConfigError(f"error: Vertex AI refuses these settings: {exc}") from None


def vertex_request(job, settings: SubmitSettings) -> dict[str, Any]:
    """The CreatePipelineJob request that ``job.submit(...)`` sends, as a JSON-able dict."""
    from google.protobuf import json_format

    resource = type(job._gca_resource).pb(job._gca_resource)
    message = type(resource)()
    message.CopyFrom(resource)
    if settings.service_account:
        message.service_account = settings.service_account
    if settings.network:
        message.network = settings.network
    return {
        "parent": job._parent,
        "pipeline_job_id": job.job_id,
        "pipeline_job": json_format.MessageToDict(message, preserving_proto_field_name=True),
        "experiment": settings.experiment or None,
    }


def submit_vertex(settings: SubmitSettings, *, dry_run: bool = False, credentials=None, out=None) -> dict:
    """Build the job; print the request (dry run) or submit it and print the console URL."""
    out = out or sys.stdout
    if dry_run and credentials is None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # a dry run never calls Google
    job = build_vertex_job(settings, credentials=credentials)
    request = vertex_request(job, settings)
    if dry_run:
        print(json.dumps(request, indent=2, sort_keys=True), file=out)
        return request
    # No experiment= here: the evaluation step logs the run to EXPERIMENT itself (the
    # pipeline parameter), and an association as well would make two rows per run.
    job.submit(service_account=settings.service_account or None, network=settings.network or None)
    print(f"submitted {job.resource_name}", file=out)
    print(f"console: {job._dashboard_uri()}", file=out)
    return request


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
        "enable_caching": settings.enable_caching,
        "service_account": settings.kfp_service_account or None,
    }
    # What the run will use: the compiled defaults (on kind: the in-cluster emulator and the
    # registry volume) under the arguments given. Shown, not sent.
    defaults = {
        name: coerce(spec["defaultValue"], spec.get("parameterType", ""))
        for name, spec in parameter_specs(load_pipeline_spec(settings.template)).items()
        if "defaultValue" in spec
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
    except KfpUnreachable as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
