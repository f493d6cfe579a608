"""Create a Vertex AI pipeline schedule that retrains on a cron.

    python -m pipelines.schedule --cron "TZ=Europe/Amsterdam 0 3 * * 1" [--name NAME]
        [--max-concurrent 1] [--max-runs N] [--start-time ISO8601] [--end-time ISO8601]
        [--config config/submit.env] [--set KEY=VALUE ...] [--param NAME=VALUE ...] [--dry-run]

``make schedule CRON="..."`` runs it (``DRY_RUN=1`` prints the request and sends
nothing). The scheduled runs are exactly what ``make submit`` would send: the same
settings (config/submit.env, environment, ``--set``/``--param``), the same checks, the
same template (TEMPLATE: build/pipeline.yaml, or a template URL from ``make publish``,
whose spec is copied into the schedule when it is created), service account, network,
labels and parameters, EXPERIMENT and TENSORBOARD included. Cron times are UTC unless
prefixed with ``TZ=<IANA zone>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError
from pipelines.settings import DEFAULT_CONFIG, SettingsError, SubmitSettings, cli_overrides, load_settings
from pipelines.submit import build_vertex_job

CRON_RE = re.compile(r"^((CRON_)?TZ=[A-Za-z0-9_+/-]+ )?(\S+ ){4}\S+$")


def check_cron(cron: str) -> str:
    """Five cron fields, optionally prefixed with ``TZ=Zone/Name``."""
    cron = " ".join(cron.split())
    if not CRON_RE.match(cron):
        raise SettingsError(
            [
                (
                    "CRON",
                    f"expected five cron fields, optionally after TZ=<IANA zone>, e.g. "
                    f"'TZ=Europe/Amsterdam 0 3 * * 1'; got {cron!r}",
                )
            ],
            "schedule",
            None,
        )
    return cron


def build_schedule(settings: SubmitSettings, *, display_name: str, credentials=None):
    """The ``aiplatform.PipelineJobSchedule`` for these settings (nothing is sent)."""
    from google.cloud import aiplatform

    job = build_vertex_job(settings, credentials=credentials)
    return aiplatform.PipelineJobSchedule(
        pipeline_job=job,
        display_name=display_name,
        credentials=credentials,
        project=settings.project,
        location=settings.region,
    )


def _time(key: str, text: str | None):
    """An RFC 3339 time as an aware datetime (what the Schedule proto's Timestamp takes)."""
    if not text:
        return None
    from datetime import datetime, timezone

    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(
            [(key, f"expected an RFC 3339 time like 2026-01-31T03:00:00Z, got {text!r}")], "schedule", None
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def schedule_options(settings: SubmitSettings, args: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``PipelineJobSchedule.create``."""
    return {
        "cron": args["cron"],
        "start_time": _time("START_TIME", args.get("start_time")),
        "end_time": _time("END_TIME", args.get("end_time")),
        "max_run_count": args.get("max_runs") or None,
        "max_concurrent_run_count": args.get("max_concurrent") or 1,
        "service_account": settings.service_account or None,
        "network": settings.network or None,
    }


def schedule_request(schedule, options: dict[str, Any]) -> dict[str, Any]:
    """The CreateSchedule request ``schedule.create(**options)`` sends, as a JSON-able dict.

    The fields are set on a copy as ``PipelineJobSchedule._create`` sets them.
    """
    from google.protobuf import json_format

    resource = type(schedule._gca_resource).pb(schedule._gca_resource)
    message = type(resource)()
    message.CopyFrom(resource)
    message.cron = options["cron"]
    if options["start_time"]:
        message.start_time.FromDatetime(options["start_time"])
    if options["end_time"]:
        message.end_time.FromDatetime(options["end_time"])
    if options["max_run_count"]:
        message.max_run_count = options["max_run_count"]
    message.max_concurrent_run_count = options["max_concurrent_run_count"]
    if options["service_account"]:
        message.create_pipeline_job_request.pipeline_job.service_account = options["service_account"]
    if options["network"]:
        message.create_pipeline_job_request.pipeline_job.network = options["network"]
    return {
        "parent": schedule._parent,
        "schedule": json_format.MessageToDict(message, preserving_proto_field_name=True),
    }


def create_schedule(
    settings: SubmitSettings,
    *,
    cron: str,
    name: str = "",
    dry_run: bool = False,
    credentials=None,
    out=None,
    **limits: Any,
) -> dict:
    """Print the request (dry run) or create the schedule and print its console URL."""
    out = out or sys.stdout
    if settings.target != "vertex":
        raise ConfigError("Schedules are a Vertex AI feature; use TARGET=vertex (KFP has recurring runs of its own).")
    if dry_run and credentials is None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # a dry run never calls Google
    display_name = name or f"{settings.pipeline_name}-retrain"
    schedule = build_schedule(settings, display_name=display_name, credentials=credentials)
    options = schedule_options(settings, {"cron": check_cron(cron), **limits})
    request = schedule_request(schedule, options)
    if dry_run:
        print(json.dumps(request, indent=2, sort_keys=True), file=out)
        return request
    schedule.create(**options)
    print(f"created schedule {schedule.resource_name} ({options['cron']})", file=out)
    print(
        f"console: https://console.cloud.google.com/vertex-ai/pipelines/schedules?project={settings.project}", file=out
    )
    return request


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipelines.schedule", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cron", required=True, help='e.g. "TZ=Europe/Amsterdam 0 3 * * 1" (Mondays 03:00)')
    parser.add_argument("--name", default="", help="schedule display name (default: <pipeline>-retrain)")
    parser.add_argument("--max-concurrent", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--max-runs", type=int, default=0, help="stop after this many runs (0 = no limit)")
    parser.add_argument("--start-time", default="", help="RFC 3339 time of the first possible run")
    parser.add_argument("--end-time", default="", help="RFC 3339 time after which no run starts")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="KEY=VALUE, JSON or YAML settings file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="one pipeline parameter")
    parser.add_argument("--dry-run", action="store_true", help="print the request as JSON, send nothing")
    args = parser.parse_args(argv)
    try:
        overrides = cli_overrides(args.set, args.param)
        settings = load_settings("vertex", args.config, overrides=overrides)
        create_schedule(
            settings,
            cron=args.cron,
            name=args.name,
            dry_run=args.dry_run,
            max_concurrent=args.max_concurrent,
            max_runs=args.max_runs,
            start_time=args.start_time,
            end_time=args.end_time,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
