"""`fer-pipeline`: every pipeline step as a subcommand, so each can be run and debugged
without KFP, plus `validate` for a dataset and `run` for all steps in a row.

    fer-pipeline validate fer2013.zip
    fer-pipeline run fer2013.zip --out runs/first --weights none --frozen-epochs 2 --finetune-epochs 1

Exit codes: 0 done; 1 an input (dataset, photo, registry or run index) is unusable as it
is, or the system refused a file mid-command (the path and its reason are named);
2 the command line or configuration is wrong (the message names the value or option);
3 `monitor` found drift; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM); 141 the output pipe closed early (`| head`), silently. Errors are one line; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fer_pipeline import __version__, cli_models, cli_monitor, cli_serve, runs
from fer_pipeline.classes import averaged_classes_note
from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.cli_paths import given, given_path, output_dir, output_file
from fer_pipeline.config import SplitConfig, TrainConfig
from fer_pipeline.errors import ConfigError, FerError
from fer_pipeline.files import write_json
from fer_pipeline.presets import PRESETS, float32_epochs_note
from fer_pipeline.recipe import RECIPE_FIELDS, resolve

log = logging.getLogger("fer_pipeline.cli")


# --- config options generated from the dataclasses -------------------------------------


def _parse_tuple(kind):
    what, example = ("whole numbers", "256,512") if kind is int else ("numbers", "0.4,0.5")

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a list of {what}; separate them with commas, e.g. {example}"
            ) from None

    return parse


def _parse_bool(text: str) -> bool:
    from fer_pipeline.files import parse_bool

    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Fields that name a folder the command writes: checked as --out is, before any work.
FOLDER_FIELDS = {"backup_dir": lambda value: str(output_dir(value)) if "://" not in value else value}


def add_config_arguments(parser: argparse.ArgumentParser, cls, only: Sequence[str] | None = None) -> None:
    """One ``--field-name`` option per dataclass field, typed from its default."""
    group = parser.add_argument_group(f"{cls.__name__} (defaults in fer_pipeline/config.py)")
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        default = f.default
        if isinstance(default, bool):
            kind = _parse_bool
        elif isinstance(default, tuple):
            kind = _parse_tuple(type(default[0]) if default else str)
        else:
            kind = type(default)
        kind = FOLDER_FIELDS.get(f.name, kind)
        group.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None, help=f"default: {default!r}"
        )


def recipe_from_args(args: argparse.Namespace):
    """The recipe of ``--preset`` and the field flags given, resolved as the pipeline's steps resolve it."""
    given = {k: v for k, v in vars(args).items() if k in RECIPE_FIELDS and v is not None}
    try:
        return resolve(getattr(args, "preset", ""), given)
    except ConfigError as exc:
        raise ConfigError(named_as_options(str(exc))) from None


_FIELD_AT_FAULT = re.compile(
    r"\b(" + "|".join(sorted(RECIPE_FIELDS, key=len, reverse=True)) + r")\b(?= must | takes | is | has )"
)


def named_as_options(message: str) -> str:
    """A recipe message in the command line's terms: the field at fault as the option that
    sets it (``seed must be ...`` -> ``--seed must be ...``)."""
    return _FIELD_AT_FAULT.sub(lambda match: "--" + match.group(1).replace("_", "-"), message)


def add_preset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="",
        choices=["", *PRESETS],
        help="named recipe (fer_pipeline/presets.py); the field flags override it",
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# --- subcommands ------------------------------------------------------------------------


def cmd_validate(args) -> int:
    from fer_pipeline.ingest import IngestError, IngestOptions, read_source

    path = _local_source(args.path)
    started = time.time()
    try:
        result = read_source(path, IngestOptions(convert=args.convert, strict=not args.quarantine))
    except IngestError as exc:  # rejected files: show the whole report, then the reason
        print(exc.report.summary_text())
        if args.json:  # the report is what --json asked for, usable or not
            write_json(args.json, exc.report.to_dict())
        print(f"\ndataset NOT usable: {exc}", file=sys.stderr)
        return 1
    print(result.report.summary_text())
    print(f"\nread in {time.time() - started:.1f} s")
    if args.json:
        write_json(args.json, result.report.to_dict())
    if not result.report.usable:
        print("dataset NOT usable: see the problems above", file=sys.stderr)
        return 1
    print("dataset usable")
    return 0


def _local_source(source: str) -> Path:
    """The local file or folder `validate` reads; a cloud source or a missing path is a wrong
    command line (2), named with what to do instead."""
    from fer_pipeline.steps import KAGGLE_PREFIX, existing_path
    from fer_pipeline.storage import is_gcs_uri

    if is_gcs_uri(source) or source.startswith(KAGGLE_PREFIX):
        raise FerError(
            f"validate reads a local path, not {source}. Check a cloud source by ingesting it "
            f"(`fer-pipeline ingest {source} --out DIR` validates it the same way and writes ingest_report.json), "
            "or download it first and validate the local copy."
        )
    return existing_path(source, cloud=False)


def cmd_ingest(args) -> int:
    from fer_pipeline.ingest import IngestOptions
    from fer_pipeline.steps import ingest_step

    outcome = ingest_step(
        args.source, args.out, gcs_prefix=args.gcs_prefix or "", options=IngestOptions(convert=args.convert)
    )
    _print_json({k: v for k, v in outcome.to_json().items() if k != "manifest"})  # scripts parse stdout
    return 0


def cmd_split(args) -> int:
    from fer_pipeline.steps import split_step

    split = split_step(args.dataset, args.out, recipe_from_args(args).split)
    _print_json({"train": split.train_counts, "validation": split.val_counts, "class_weights": split.class_weights})
    return 0


def cmd_train_frozen(args) -> int:
    from fer_pipeline.steps import train_frozen_step

    result = train_frozen_step(args.dataset, args.split, args.out, recipe_from_args(args).train)
    print(f"phase 1 done: {result.epochs_run} epochs, best {result.best_epoch}, model {result.model_path}")
    return 0


def cmd_fine_tune(args) -> int:
    from fer_pipeline.steps import fine_tune_step

    result = fine_tune_step(args.dataset, args.split, args.model, args.out, recipe_from_args(args).train)
    print(f"phase 2 done: {result.epochs_run} epochs, best {result.best_epoch}, model {result.model_path}")
    return 0


def cmd_evaluate(args) -> int:
    from fer_pipeline.steps import evaluate_step

    metrics = evaluate_step(args.dataset, args.model, args.out, history_paths=args.history or ())
    _print_headline(metrics, Path(args.out))
    return 0


def _print_headline(metrics: dict, out_dir: Path) -> None:
    def shown(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.4f}" + averaged_classes_note(metrics, key)

    print(f"test accuracy {shown('accuracy')}  macro-F1 {shown('macro_f1')}  macro ROC-AUC {shown('macro_roc_auc')}")
    print(f"report: {out_dir / 'report.html'}")


def cmd_register(args) -> int:
    """Every option and the metrics file are checked here, before the export (seconds)
    writes anything: the command line first (exit 2), then the metrics (exit 1)."""
    from fer_pipeline.errors import ConfigError
    from fer_pipeline.registry import LocalRegistry, check_model_name, check_registry_folder, parse_labels
    from fer_pipeline.steps import register_step

    labels = parse_labels(args.label)
    if args.registry == "vertex":
        raise ConfigError(
            "--registry vertex: `fer-pipeline register` registers into a local registry folder only; "
            "a Vertex AI registration is the pipeline's register step (`make compile && make submit`, "
            "registry=vertex, the default), which has the project, location and staging bucket it needs."
        )
    check_model_name(args.name, option="--name")
    check_registry_folder(args.registry, option="--registry")
    LocalRegistry(Path(args.registry)).list()  # a damaged index.json is refused now, not after the export
    # register_step reads the metrics file before its export
    _print_json(register_step(args.model, args.metrics, registry=args.registry, display_name=args.name, labels=labels))
    return 0


def cmd_run(args) -> int:
    """All steps in a row into one output directory (no KFP)."""
    from fer_pipeline.ingest import IngestOptions
    from fer_pipeline.model import check_model_options
    from fer_pipeline.precision import requested_precision
    from fer_pipeline.steps import evaluate_step, fine_tune_step, ingest_step, split_step, train_frozen_step

    out = Path(args.out)
    # Every option is checked here, before the data is read (minutes on the real zip).
    recipe = recipe_from_args(args)
    cfg, split_config = recipe.train, recipe.split
    options = IngestOptions(convert=args.convert)
    precision = requested_precision(cfg)
    if note := float32_epochs_note(
        args.preset, cfg.frozen_epochs, precision, "--frozen-epochs ", cfg.time_budget_minutes
    ):
        log.info(note)
    index = args.runs_index or runs.default_index()
    runs.RunIndex(index).records()  # a damaged index refused now, not after the training
    check_model_options(cfg)  # weights and unfreeze_from: refused by the phases hours later
    started = time.time()
    with _removed_if_refused(out):  # a dataset the split refuses leaves no half-made run behind
        log.info("[1/5] ingest %s", args.source)
        outcome = ingest_step(args.source, out / "dataset", options=options)
        log.info("[2/5] split")
        split_step(outcome.uri, out / "split.json", split_config)
    log.info("[3/5] phase 1: frozen backbone")
    frozen = train_frozen_step(outcome.uri, out / "split.json", out / "frozen", cfg)
    log.info("[4/5] phase 2: fine-tuning")
    tuned = fine_tune_step(outcome.uri, out / "split.json", frozen.model_path, out / "finetune", cfg)
    log.info("[5/5] evaluate")
    histories = [out / "frozen" / "history.json", out / "finetune" / "history.json"]
    params = {
        **recipe.params(),
        "source": args.source,
        "dataset_sha256": str(outcome.manifest.get("source_sha256", ""))[:16],
    }
    metrics = evaluate_step(outcome.uri, tuned.model_path, out / "evaluation", history_paths=histories, run_info=params)
    _print_headline(metrics, out / "evaluation")
    record = runs.record_finished_run(
        out / "evaluation",
        histories,
        params,
        run_id=runs.run_id_for(out.name, started),
        kind="cli",
        started=started,
        finished=time.time(),
        index=index,
        artifacts={"tensorboard": [str(out / phase / "tensorboard") for phase in ("frozen", "finetune")]},
    )
    print(
        f"total {time.time() - started:.0f} s; run {record['run_id']} recorded in {index} (fer-pipeline runs compare)"
    )
    return 0


@contextmanager
def _removed_if_refused(out: Path):
    """Remove what the block made of ``out`` (its highest folder that did not exist yet) when a
    FerError ends it."""
    made = None if out.exists() else next(p for p in (out, *out.parents) if p.parent.exists())
    try:
        yield
    except FerError:
        if made is not None and made.exists():
            shutil.rmtree(made, ignore_errors=True)
        raise


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="fer-pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a dataset and print its report (exit 1 if unusable)")
    p.add_argument("path", type=given, help="Kaggle zip or folder, or fer2013.csv")
    p.add_argument("--convert", action="store_true", help="accept RGB/other-size images by converting them")
    p.add_argument(
        "--quarantine",
        action="store_true",
        help="also build the dataset without the rejected files, to report what would be kept "
        "(duplicates, classes left empty); still exit 1 while any file is rejected, as ingest refuses them",
    )
    p.add_argument("--json", type=output_file, help="also write the full report as JSON to this file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("ingest", help="step 1: read, validate and write the canonical dataset")
    p.add_argument("source", type=given, help="zip, folder, csv, gs:// URI or kaggle:msambare/fer2013")
    p.add_argument("--out", type=output_dir, required=True, help="local directory for the canonical dataset")
    p.add_argument("--gcs-prefix", help="also publish to gs://BUCKET/PREFIX/datasets/<checksum>")
    p.add_argument("--convert", action="store_true", help="accept RGB/other-size images by converting them")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("split", help="step 2: stratified train/validation split and class weights")
    p.add_argument("dataset", type=given, help="canonical dataset directory or gs:// prefix")
    p.add_argument("--out", type=output_file, required=True, help="split JSON to write")
    add_preset_argument(p)
    add_config_arguments(p, SplitConfig)
    p.set_defaults(func=cmd_split)

    for name, func, help_text in (
        ("train-frozen", cmd_train_frozen, "step 3: train the head on the frozen backbone"),
        ("fine-tune", cmd_fine_tune, "step 4: unfreeze the backbone and fine-tune"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("dataset", type=given, help="canonical dataset directory or gs:// prefix")
        p.add_argument("--split", type=given_path, required=True, help="split JSON from `split`")
        if name == "fine-tune":
            p.add_argument("--model", type=given_path, required=True, help="phase-1 model.keras")
        p.add_argument("--out", type=output_dir, required=True, help="output directory (model.keras, history.json)")
        add_preset_argument(p)
        add_config_arguments(p, TrainConfig)
        p.set_defaults(func=func)

    p = sub.add_parser("evaluate", help="step 5: test metrics, plots and HTML report")
    p.add_argument(
        "dataset", type=given, help="canonical dataset directory from `ingest` (not the zip) or gs:// prefix"
    )
    p.add_argument("--model", type=given_path, required=True, help="model.keras to evaluate")
    p.add_argument("--history", type=given_path, action="append", help="history.json of a phase (repeatable)")
    p.add_argument("--out", type=output_dir, required=True, help="output directory (metrics, plots, report)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("register", help="step 6: export and register a model version")
    p.add_argument("--model", type=Path, required=True, help="model.keras")
    p.add_argument(
        "--metrics", type=Path, required=True, help="metrics.json from evaluate (must hold macro_f1, a number)"
    )
    p.add_argument(
        "--registry",
        default=os.environ.get("FER_REGISTRY", "build/registry"),
        metavar="DIR",
        help="local registry folder, made if absent (default: $FER_REGISTRY or build/registry); "
        "Vertex AI registration is the pipeline's (make submit)",
    )
    p.add_argument(
        "--name", default="fer-emotion", help="model family: letters, digits, '.', '_', '-' (default fer-emotion)"
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("run", help="all steps in a row, no KFP: ingest, split, both phases, evaluate")
    p.add_argument("source", type=given, help="zip, folder, csv, gs:// URI or kaggle:msambare/fer2013")
    p.add_argument("--out", type=output_dir, required=True, help="output directory for everything")
    p.add_argument(
        "--val-fraction", type=float, default=None, help=f"default: {SplitConfig.val_fraction} or the preset's"
    )
    add_preset_argument(p)
    p.add_argument("--convert", action="store_true")
    p.add_argument(
        "--runs-index",
        type=output_file,
        default=None,
        help="run index to append this run to (default: $FER_RUNS or build/runs.json)",
    )
    add_config_arguments(p, TrainConfig)
    p.set_defaults(func=cmd_run)

    cli_models.add_subcommands(sub)  # models list/show, predict
    cli_serve.add_subcommands(sub)  # serve
    runs.add_subcommands(sub)  # runs list/compare
    cli_monitor.add_subcommand(sub)  # monitor (prediction log vs training set)
    return parser


class Terminated(BaseException):
    """SIGTERM as an exception, like KeyboardInterrupt for SIGINT (so no ``except Exception`` takes it)."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (how Vertex, Kubernetes and `kill` stop a process) unwinds like Ctrl-C.

    With the default handler the process dies where it stands, and temporary directories (a
    served model's exported copy, a gs:// weights file) stay behind; uvicorn, which shuts down
    on SIGTERM, restores the handler it found and raises the signal again, so `serve` needs
    this too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with sigterm_unwinds():
            return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader stopped reading (`| head`): no error to report, as a shell tool would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit, when Python flushes stdout
        return 128 + signal.SIGPIPE
    except (FerError, OSError, KeyboardInterrupt, Terminated) as exc:
        if args.debug:
            raise
        line, code = _ending(exc)
        print(line, file=sys.stderr)
        return code


def _ending(exc: FerError | OSError | KeyboardInterrupt | Terminated) -> tuple[str, int]:
    """The one line and the exit status a command ends with instead of a traceback
    (128 + the signal's number for Ctrl-C and SIGTERM, as shells report them). An OSError
    is a file the system refused (permissions, a read-only or full disk): exit 1, the
    path and the system's reason."""
    if isinstance(exc, FerError):
        return f"error: {exc}", exc.exit_code
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"error: {where}{exc.strerror or exc}; check that path and its permissions (--debug shows where)", 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    return "terminated", 143


if __name__ == "__main__":
    sys.exit(main())
