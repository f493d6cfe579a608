"""CLI subcommand ``serve``: a local HTTP server in the format of Vertex AI's prebuilt
TensorFlow prediction container (``fer_pipeline.serve`` says what it answers).

    fer-pipeline serve MODEL [--host 127.0.0.1] [--port 8080] [--name NAME] [--registry DIR]
                             [--max-body-bytes N] [--max-instances N] [--max-pixels N]
                             [--max-concurrent N] [--max-queue N] [--log PATH] [--access-log]
"""

from __future__ import annotations

import argparse
import sys

from fer_pipeline.cli_models import EXIT_OK, add_registry_option, positive_int, reports_user_errors
from fer_pipeline.cli_paths import output_file
from fer_pipeline.errors import FerError

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080  # what Vertex gives a serving container as AIP_HTTP_PORT
SERVE_PACKAGES = ("fastapi", "starlette", "uvicorn", "anyio")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the main CLI."""
    from fer_pipeline.serve_limits import Limits

    defaults = Limits()
    serve = subparsers.add_parser(
        "serve",
        help="Serve a model over HTTP as Vertex AI's prebuilt TensorFlow container does (local).",
        description="Serve MODEL's exported SavedModel over HTTP with the routes and JSON of Vertex "
        "AI's prebuilt TensorFlow container (TensorFlow Serving's REST API): POST "
        '/v1/models/NAME:predict with {"instances": [{"image_bytes": {"b64": ...}}]}, plus '
        "POST /v1/models/NAME:detect with a photo's bytes and GET /health. Listens on "
        "loopback unless --host says otherwise; Ctrl-C stops it.",
    )
    serve.add_argument(
        "model",
        metavar="MODEL",
        help="A registry reference (NAME@champion), a folder with saved_model.pb and/or model.keras, "
        "or a .keras file (exported at start-up as the pipeline exports it).",
    )
    serve.add_argument(
        "--host", default=LOOPBACK, help=f"Address to listen on (default {LOOPBACK}: this machine only)."
    )
    serve.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)."
    )
    serve.add_argument(
        "--name", default=None, help="Model name in the URLs (default: the registry name, or 'default' for a path)."
    )
    limits = serve.add_argument_group("limits (a request past one gets a 4xx or 503 JSON error)")
    for flag, help_text in (
        ("--max-body-bytes", "bytes in one request body"),
        ("--max-instances", "instances in one :predict request"),
        ("--max-pixels", "decoded pixels in one request, all its images together"),
        ("--max-concurrent", "requests using the model at once"),
        ("--max-queue", "requests waiting for the model; more get a 503 at once"),
    ):
        field = flag[2:].replace("-", "_")
        limits.add_argument(
            flag,
            metavar="N",
            type=positive_int,
            default=getattr(defaults, field),
            help=f"{help_text} (default {getattr(defaults, field):,}).",
        )
    serve.add_argument(
        "--log",
        metavar="PATH",
        type=output_file,
        help="Append one JSON line per classified face to this prediction log (for `fer-pipeline monitor`).",
    )
    serve.add_argument("--access-log", action="store_true", help="Log every request (uvicorn's access log).")
    add_registry_option(serve)
    serve.set_defaults(func=run_serve)


def port_number(value: str) -> int:
    """argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {number}")
    return number


@reports_user_errors
def run_serve(args: argparse.Namespace) -> int:
    """``serve MODEL``: load the model, then serve until Ctrl-C."""
    from fer_pipeline.serve_limits import Limits

    if args.name is not None:  # it becomes the URLs' /v1/models/NAME
        from fer_pipeline.registry import check_model_name

        check_model_name(args.name, option="--name")
    server = import_server()
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_instances=args.max_instances,
        max_pixels=args.max_pixels,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
    )
    if args.host not in (LOOPBACK, "localhost", "::1"):
        server.bind_socket(args.host, args.port).close()  # an address this machine lacks: refused before the warning
        print(
            f"warning: listening on {args.host}: other machines can reach it, with no authentication.", file=sys.stderr
        )
    server.serve(
        args.model,
        host=args.host,
        port=args.port,
        limits=limits,
        registry_root=args.registry,
        name=args.name,
        log_path=args.log,
        access_log=args.access_log,
        announce=lambda line: print(line, flush=True),
    )
    return EXIT_OK


def import_server():
    """``fer_pipeline.serve``, or one line saying how to install what it needs."""
    try:
        from fer_pipeline import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in SERVE_PACKAGES:
            raise FerError(
                f"serve needs {exc.name}: pip install 'fer-pipeline[serve]' (make setup installs it)."
            ) from None
        raise
    return serve
