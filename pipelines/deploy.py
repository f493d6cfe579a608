"""Deploy a registered model to a Vertex AI endpoint, or score images with a Vertex batch
prediction job (fer_pipeline/cloud/vertex_deploy.py makes the calls).

    python -m pipelines.deploy deploy [--model-name NAME] [--version champion|challenger|N]
        [--endpoint NAME] [--traffic PERCENT] [--machine-type TYPE] [--min-replicas N]
        [--max-replicas N] [--config FILE] [--set KEY=VALUE ...] [--dry-run]
    python -m pipelines.deploy batch-predict --input gs://FOLDER/|FILE.jsonl [--output gs://PREFIX]
        [--model-name NAME] [--version ...] [--machine-type TYPE] [--min-replicas N]
        [--max-replicas N] [--config FILE] [--set KEY=VALUE ...] [--dry-run]

``make deploy`` and ``make batch-predict`` run it (docs/cloud.md, "Deploy and batch
predict"). PROJECT and REGION come from the settings file (config/submit.env), the
environment or ``--set``, as for ``make submit``; SERVICE_ACCOUNT (optional) runs the
served model and the job, LABELS and ENCRYPTION_KEY apply to what is created, and
PIPELINE_ROOT holds batch inputs and outputs unless ``--output`` is given.

deploy:        the version (default: the ``champion`` alias of the Vertex model
               ``fer-emotion``) goes to the endpoint of that display name, created if
               there is none. ``--traffic 10`` gives it 10% and leaves the models the
               endpoint serves the rest, in their present proportions.
batch-predict: every image under a gs:// folder, or each URI of a JSONL, becomes one line
               ``{"key": URI, "image_bytes": {"b64": ...}}`` of ``OUTPUT/instances.jsonl``;
               the job writes predictions, each with its image's URI as ``key``, under
               ``OUTPUT/predictions``.

``--dry-run`` looks up what the requests depend on (the model version, the endpoint and its
traffic, the images: reads only), prints the complete requests as JSON and sends nothing.
Exit codes: 0 done, 2 a bad option or setting (one line naming it and the fix, nothing
sent), 1 a lookup or call that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fer_pipeline import storage
from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError, FerError
from pipelines.settings import DEFAULT_CONFIG, EXAMPLE, key_problems, parse_labels, parse_pairs
from pipelines.settings_file import merge_sources, non_empty

REQUIRED = ("PROJECT", "REGION")
DEFAULT_MODEL = "fer-emotion"  # the pipeline's model_display_name
_VERSION = re.compile(r"^(?:[1-9][0-9]*|[a-z][a-z0-9_-]{0,62})$")
_MACHINE_TYPE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


# ------------------------------------------------------------------ settings
def read_settings(
    config: Path | str | None, environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """config file < environment < ``--set``, as ``make submit`` reads them; the non-empty values.

    Raises:
        ConfigError: an unknown key, a named config file that is missing, no PROJECT or REGION.
    """
    merged, path = merge_sources(config, os.environ if environ is None else environ, overrides)
    if problems := key_problems(merged):  # as submit and publish check them
        named = "; ".join(f"{key}: {why}" for key, why in problems)
        raise ConfigError(f"{named}: fix them ({EXAMPLE} lists every key).")
    values = non_empty(merged)
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: set {'/'.join(missing)} in {path or DEFAULT_CONFIG} "
            "(make infra-config writes them), in the environment, or with --set KEY=VALUE."
        )
    return values


def labels_from(settings: Mapping[str, str]) -> dict[str, str]:
    try:
        labels = parse_labels(settings.get("LABELS", ""))
    except ValueError as exc:
        raise ConfigError(f"LABELS: {exc}.") from None
    return {"app": "fer-pipeline", **labels}


# ------------------------------------------------------------------ options
def bad_option(make_name: str, flag: str, value: str, fix: str) -> ConfigError:
    return ConfigError(f"{make_name}={value} ({flag}): {fix}")


def whole_number(value: str, make_name: str, flag: str, low: int, high: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise bad_option(make_name, flag, value, f"must be a whole number from {low} to {high} ({what}).")
    return number


def machines_from(args: argparse.Namespace):
    from fer_pipeline.cloud.vertex_deploy import Machines

    if not _MACHINE_TYPE.match(args.machine_type):
        raise bad_option(
            "MACHINE_TYPE", "--machine-type", args.machine_type, "a Compute Engine machine type, e.g. n1-standard-2."
        )
    low = whole_number(args.min_replicas, "MIN_REPLICAS", "--min-replicas", 1, 1000, "replicas always running")
    high = whole_number(args.max_replicas or str(low), "MAX_REPLICAS", "--max-replicas", 1, 1000, "replicas at most")
    if high < low:
        raise bad_option("MAX_REPLICAS", "--max-replicas", str(high), f"must be at least MIN_REPLICAS ({low}).")
    return Machines(args.machine_type, low, high)


def check_model_options(args: argparse.Namespace) -> None:
    if not args.model_name.strip():
        raise bad_option("MODEL_NAME", "--model-name", "''", f"the Vertex model's display name, e.g. {DEFAULT_MODEL}.")
    if not _VERSION.match(args.version):
        raise bad_option(
            "MODEL_VERSION", "--version", args.version, "an alias (champion, challenger) or a version number, e.g. 3."
        )


def _names_a_bucket(uri: str) -> bool:
    try:
        storage.GcsPath.parse(uri)
    except FerError:
        return False
    return True


def check_batch_paths(args: argparse.Namespace, settings: Mapping[str, str]) -> str:
    """The output prefix; the input checked (a gs:// folder, or a .jsonl local or on gs://)."""
    from fer_pipeline.batch_instances import image_uris, is_uri_list

    source = args.input
    if not source:
        raise bad_option("INPUT", "--input", "''", "a gs:// folder of images or a .jsonl of image URIs.")
    if not _names_a_bucket(source) and not (is_uri_list(source) and Path(source).is_file()):
        raise bad_option(
            "INPUT", "--input", source, "must be a gs:// folder of images or a .jsonl of image URIs (local or gs://)."
        )
    if not source.startswith("gs://"):  # a local list is read now: a bad line fails here, not after the lookups
        image_uris(source)
    output = args.output or settings.get("PIPELINE_ROOT", "")
    if not _names_a_bucket(output):
        raise bad_option(
            "OUTPUT",
            "--output",
            output or "''",
            "a gs:// prefix for the instances and predictions (or set PIPELINE_ROOT).",
        )
    return output.rstrip("/")


# ------------------------------------------------------------------ commands
def deploy(args: argparse.Namespace, settings: Mapping[str, str], *, credentials=None, out=None) -> dict[str, Any]:
    """Plan (lookups only), then print the plan (dry run) or send it and print what was deployed."""
    from fer_pipeline.cloud import vertex_deploy

    out = out or sys.stdout
    check_model_options(args)
    machines = machines_from(args)
    traffic = whole_number(args.traffic, "TRAFFIC", "--traffic", 1, 100, "the percent of the endpoint's traffic")
    if not args.endpoint.strip():
        raise bad_option(
            "ENDPOINT", "--endpoint", "''", "an endpoint display name (reused or created) or resource name."
        )
    clients = vertex_deploy.make_clients(settings["REGION"], credentials)
    plan = vertex_deploy.plan_deploy(
        clients,
        project=settings["PROJECT"],
        location=settings["REGION"],
        model=args.model_name,
        version=args.version,
        endpoint=args.endpoint,
        machines=machines,
        traffic=traffic,
        labels=labels_from(settings),
        service_account=settings.get("SERVICE_ACCOUNT", ""),
        encryption_key=settings.get("ENCRYPTION_KEY", ""),
    )
    if args.dry_run:
        print(json.dumps(plan.to_json(), indent=2, sort_keys=True), file=out)
        return plan.to_json()
    print(f"deploying {plan.deploy.deployed_model.model} (a first deployment takes 10-20 minutes)", file=sys.stderr)
    result = vertex_deploy.run_deploy(clients, plan)
    print(json.dumps(result, indent=2, sort_keys=True), file=out)
    return result


def batch_predict(
    args: argparse.Namespace, settings: Mapping[str, str], *, credentials=None, out=None
) -> dict[str, Any]:
    """List the images, build the job; print it (dry run) or stage the instances and submit it."""
    from fer_pipeline import batch_instances
    from fer_pipeline.cloud import vertex_deploy

    out = out or sys.stdout
    check_model_options(args)
    machines = machines_from(args)
    output = check_batch_paths(args, settings)
    display_name = f"{args.model_name}-batch-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    prefix = output if args.output else f"{output}/batch-predictions/{display_name}"
    clients = vertex_deploy.make_clients(settings["REGION"], credentials)
    parent = vertex_deploy.parent_of(settings["PROJECT"], settings["REGION"])
    version = vertex_deploy.find_model_version(clients, parent, args.model_name, args.version)
    uris = batch_instances.image_uris(args.input)
    request = vertex_deploy.batch_prediction_request(
        parent,
        version,
        f"{prefix}/instances.jsonl",
        f"{prefix}/predictions",
        machines,
        display_name=display_name,
        labels=labels_from(settings),
        service_account=settings.get("SERVICE_ACCOUNT", ""),
        encryption_key=settings.get("ENCRYPTION_KEY", ""),
    )
    plan = {
        "instances": {
            "uri": f"{prefix}/instances.jsonl",
            "images": len(uris),
            "first": uris[:5],
            "line": batch_instances.LINE_SHAPE,
        },
        "create_batch_prediction_job": vertex_deploy.request_json(request),
    }
    if args.dry_run:
        print(json.dumps(plan, indent=2, sort_keys=True), file=out)
        return plan
    print(f"staging {len(uris)} images into {prefix}/instances.jsonl", file=sys.stderr)
    batch_instances.stage_instances(uris, f"{prefix}/instances.jsonl")
    job = vertex_deploy.run_batch_prediction(clients, request)
    result = {"job": job.name, "state": job.state.name, "predictions": f"{prefix}/predictions"}
    print(json.dumps(result, indent=2, sort_keys=True), file=out)
    return result


# ------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m pipelines.deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = OneLineParser(add_help=False)
    common.add_argument("--config", default=str(DEFAULT_CONFIG), help="KEY=VALUE, JSON or YAML settings file")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    common.add_argument("--dry-run", action="store_true", help="look up, print the requests as JSON, send nothing")
    common.add_argument("--model-name", default=DEFAULT_MODEL, help=f"Vertex model display name ({DEFAULT_MODEL})")
    common.add_argument("--version", default="champion", help="alias or version number (champion)")
    common.add_argument("--machine-type", default="n1-standard-2", help="serving machine type (n1-standard-2)")
    common.add_argument("--min-replicas", default="1", help="replicas always running (1)")
    common.add_argument("--max-replicas", default="", help="replicas at most (MIN_REPLICAS)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    one = sub.add_parser("deploy", parents=[common], help="deploy a version to an endpoint")
    one.add_argument(
        "--endpoint", default=DEFAULT_MODEL, help=f"endpoint display name or resource name ({DEFAULT_MODEL})"
    )
    one.add_argument("--traffic", default="100", help="percent of the endpoint's traffic for this version (100)")
    one.set_defaults(func=deploy)
    batch = sub.add_parser("batch-predict", parents=[common], help="score images with a batch prediction job")
    batch.add_argument("--input", default="", help="gs:// folder of images, or a .jsonl of image URIs")
    batch.add_argument("--output", default="", help="gs:// prefix (PIPELINE_ROOT/batch-predictions/JOB)")
    batch.set_defaults(func=batch_predict)
    return parser


def main(argv: list[str] | None = None, *, credentials=None) -> int:
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.exceptions import GoogleAuthError

    args = build_parser().parse_args(argv)
    try:
        settings = read_settings(args.config, overrides=parse_pairs(args.set, "--set"))
        args.func(args, settings, credentials=credentials)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except GoogleAuthError as exc:
        print(
            f"error: no usable Google Cloud credentials ({exc}); run `gcloud auth application-default login` "
            "(a dry run needs them too: it looks up the model and the endpoint).",
            file=sys.stderr,
        )
        return 1
    except (FerError, GoogleAPICallError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
