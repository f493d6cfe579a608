"""CLI subcommands for the local model registry and for prediction on photos.

    fer-pipeline models list [--registry DIR] [--json]
    fer-pipeline models show REF [--registry DIR]
    fer-pipeline predict MODEL IMAGE... [--no-detect] [--annotate DIR] [--margin F] [--log PATH]
        [--detector mtcnn|ensemble|mtcnn-tta|haar] [--min-confidence P] [--min-face PIXELS] [--registry DIR]

The main CLI calls ``add_subcommands(subparsers)`` and then ``args.func(args)``, which
returns the exit code. Errors meant for the user (``FerError``) are printed to stderr
as one line, with the error's exit code (1 an unusable input, 2 a wrong value). The
registry folder defaults to ``$FER_REGISTRY`` or ``build/registry``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

from fer_pipeline.cli_paths import output_dir, output_file
from fer_pipeline.errors import FerError, UnusableFileError
from fer_pipeline.registry import (
    INDEX_FILE,
    LocalRegistry,
    ModelVersion,
    default_registry_root,
    missing_files_message,
)

EXIT_OK = 0
EXIT_NO_IMAGE_READ = 1
EXIT_USER_ERROR = 2


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models {list,show}`` and ``predict`` to the main CLI; each sets ``func``."""
    models = subparsers.add_parser("models", help="List and inspect models in the local registry.")
    models_sub = models.add_subparsers(dest="models_command", metavar="{list,show}", required=True)

    listing = models_sub.add_parser("list", help="List every registered version with its aliases and metric.")
    add_registry_option(listing)
    listing.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    listing.set_defaults(func=run_models_list)

    show = models_sub.add_parser("show", help="Show one version as JSON: NAME, NAME@champion, NAME@<version>.")
    show.add_argument(
        "ref", metavar="REF", help="NAME (default version), NAME@champion, NAME@challenger or NAME@<version>."
    )
    add_registry_option(show)
    show.set_defaults(func=run_models_show)

    predict = subparsers.add_parser(
        "predict",
        help="Detect faces in images and classify their emotions; prints JSON.",
        description="Detect faces (--detector: the ensemble of MTCNN, BlazeFace and CenterFace by default), "
        "classify each face, "
        "print one JSON object per image. Exit 0 when at least one image was read (images without a face get "
        "a note), 1 when none could be read or the model or registry is unusable, 2 on a usage error.",
    )
    predict.add_argument(
        "model",
        metavar="MODEL",
        help="A folder with model.keras or a .keras file, a gs:// URI, or a registry reference (NAME@champion).",
    )
    predict.add_argument("images", metavar="IMAGE", nargs="+", type=Path, help="Image files (JPEG, PNG, ...).")
    predict.add_argument(
        "--no-detect",
        action="store_true",
        help="Skip face detection: each image is one face crop (FER-style 48x48).",
    )
    predict.add_argument(
        "--annotate",
        metavar="DIR",
        type=output_dir,
        help="Write copies with boxes and labels here, as <stem>.png (<stem>-2.png, ... where two photos share a "
        "name); made with the first copy. A folder holding an input photo is refused (exit 2, nothing written): "
        "the copies could replace photos there.",
    )
    predict.add_argument(
        "--margin",
        type=margin_fraction,
        default=0.2,
        help="Crop size beyond the face box, as a fraction from 0 to 2 (default 0.2).",
    )
    predict.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="Refuse photos with more pixels than this, unread (default 100,000,000: predict.MAX_PHOTO_PIXELS).",
    )
    add_detector_options(predict)
    predict.add_argument(
        "--log",
        metavar="PATH",
        type=output_file,
        help="Append one JSON line per face to this prediction log (for `fer-pipeline monitor`).",
    )
    add_registry_option(predict)
    predict.set_defaults(func=run_predict)


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """--detector, --min-confidence, --min-face; their values are checked by DetectorOptions
    (one line, exit 2) before the model is loaded; the defaults are faces.DetectorOptions'."""
    from fer_pipeline.faces import DEFAULT_OPTIONS, DETECTORS

    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULT_OPTIONS.name,
        help="Face detector: ensemble (default: MTCNN on the photo and its mirror image plus BlazeFace's and "
        "CenterFace's passes, merged: finds the most faces, a few more false ones, about three times mtcnn's time), "
        "mtcnn (one MTCNN pass), "
        "mtcnn-tta (MTCNN on the photo, its mirror image and a darker copy) or haar (OpenCV's cascade: fastest, "
        "no TensorFlow, finds fewer faces and more false ones). All but haar turn faces upright by the eyes.",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=DEFAULT_OPTIONS.min_confidence,
        help=f"MTCNN's passes only: drop faces below this confidence, 0..1 (default {DEFAULT_OPTIONS.min_confidence}; "
        "ensemble's BlazeFace and CenterFace passes keep their own scores).",
    )
    parser.add_argument(
        "--min-face",
        type=int,
        default=DEFAULT_OPTIONS.min_face,
        metavar="PIXELS",
        help=f"Ignore faces smaller than this many pixels (default {DEFAULT_OPTIONS.min_face}).",
    )


def detector_options(args: argparse.Namespace):
    """The predict command's DetectorOptions (ConfigError on a bad value)."""
    from fer_pipeline.faces import DetectorOptions

    return DetectorOptions(name=args.detector, min_confidence=args.min_confidence, min_face=args.min_face)


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        metavar="DIR",
        type=Path,
        default=None,
        help="Local registry folder (default: $FER_REGISTRY or build/registry).",
    )


def positive_int(value: str) -> int:
    """argparse type: a whole number above 0 (checked before the model is loaded)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {number}")
    return number


def margin_fraction(value: str) -> float:
    """argparse type: --margin, a fraction of the face box from 0 to faces.MAX_MARGIN
    (checked before the model is loaded; NaN fails the comparison too)."""
    from fer_pipeline.faces import MARGIN_RANGE, valid_margin

    number = valid_margin(value)
    if number is None:
        raise argparse.ArgumentTypeError(f"must be {MARGIN_RANGE}, got {value!r}")
    return number


def reports_user_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a FerError as one line on stderr and return its exit code (1 unusable input,
    2 wrong value) instead of a traceback; with --debug, let it raise."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except FerError as exc:
            if getattr(args, "debug", False):
                raise
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code

    return wrapper


def registry_from(args: argparse.Namespace) -> LocalRegistry:
    return LocalRegistry(args.registry if args.registry is not None else default_registry_root())


def existing_registry(args: argparse.Namespace) -> LocalRegistry:
    """The registry to read; a --registry folder that does not exist is refused (a typo
    would otherwise read as an empty registry). The default folder may be absent: nothing
    has been registered yet."""
    registry = registry_from(args)
    if args.registry is not None and not registry.root.exists():
        raise UnusableFileError(
            f"Registry folder {registry.root} (--registry) does not exist; check the path. A registry is made "
            "by the first `fer-pipeline register` (or `make run-local`) into it."
        )
    return registry


@reports_user_errors
def run_models_list(args: argparse.Namespace) -> int:
    """``models list``: one row per version, or JSON with ``--json``. An alias that points at
    a version the index does not hold (a damaged index) is shown too: a table row marked
    ``dangling``, or a ``warning:`` line on stderr beside the JSON. So is a version whose
    folder is gone: its row is marked ``FILES MISSING`` and a warning names the folder."""
    registry = existing_registry(args)
    versions = registry.list()
    dangling = registry.dangling()
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2))
    elif not versions and not dangling:
        absent = "" if registry.root.exists() else " (the folder does not exist yet: `fer-pipeline register` makes it)"
        print(f"No models registered in {registry.root}{absent}.")
    else:
        print(format_versions_table(versions, dangling))
    for version in versions:
        if version.files_missing:
            print(f"warning: {missing_files_message(version)}.", file=sys.stderr)
    if dangling:
        index = registry.root / INDEX_FILE
        for name, alias, version in dangling:
            print(
                f"warning: {index} is damaged: the {'default version' if alias == 'default' else f'alias {alias!r}'}"
                f" of model {name!r} points at version {version}, which the index does not hold; "
                "restore it from a backup.",
                file=sys.stderr,
            )
    return EXIT_OK


def format_versions_table(
    versions: list[ModelVersion], dangling: list[tuple[str, str, int | None]] | tuple = ()
) -> str:
    """A plain-text table: ref, aliases, primary metric and value, created, description; a
    dangling alias gets a row of its own, ``NAME@<version>`` marked ``dangling``."""
    header = ("MODEL", "ALIASES", "METRIC", "VALUE", "CREATED", "DESCRIPTION")
    rows = [header, *(_version_row(v) for v in versions)]
    for name, alias, version in dangling:
        rows.append((f"{name}@{version}", alias, "-", "-", "-", "DANGLING: the index holds no such version"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in rows
    )


def _version_row(v: ModelVersion) -> tuple[str, ...]:
    aliases = ",".join(v.aliases + (("default",) if v.is_default else ()))
    value = v.metrics.get(v.primary_metric)
    missing = f"FILES MISSING: {v.path} is gone; " if v.files_missing else ""
    return (
        v.ref,
        aliases or "-",
        v.primary_metric,
        f"{value:.4f}" if isinstance(value, (int, float)) else str(value),
        v.created or "-",
        missing + v.description,
    )


@reports_user_errors
def run_models_show(args: argparse.Namespace) -> int:
    """``models show REF``: the resolved version as JSON, with ``model_card``: the path of
    its model card (null for a version registered before cards, with a note on stderr; a
    version whose folder is gone gets a warning instead)."""
    from fer_pipeline.model_card import MODEL_CARD_FILE

    version = existing_registry(args).resolve(args.ref)
    card = version.path / MODEL_CARD_FILE
    print(json.dumps(version.to_dict() | {"model_card": str(card) if card.is_file() else None}, indent=2))
    if version.files_missing:
        print(f"warning: {missing_files_message(version)}.", file=sys.stderr)
    elif not card.is_file():
        print(f"note: {version.ref} was registered without a model card ({MODEL_CARD_FILE}).", file=sys.stderr)
    return EXIT_OK


@reports_user_errors
def run_predict(args: argparse.Namespace) -> int:
    """``predict MODEL IMAGE...``: JSON results; exit 1 only when no image could be read."""
    from fer_pipeline.predict import (
        MAX_PHOTO_PIXELS,
        ModelOutputError,
        check_annotate_dir,
        load_model_ref,
        predict_images,
    )
    from fer_pipeline.prediction_log import Observed, PredictionLog, model_version_for

    detector = detector_options(args)  # checked before the (slow) model load
    check_annotate_dir(args.annotate, args.images)
    model = load_model_ref(args.model, args.registry)
    seen = Observed()
    try:
        results = predict_images(
            model,
            args.images,
            skip_detection=args.no_detect,
            annotate_dir=args.annotate,
            margin=args.margin,
            max_pixels=args.max_pixels or MAX_PHOTO_PIXELS,
            observe=seen if args.log else None,
            detector=detector,
        )
    except ModelOutputError as exc:  # the library does not know which file the model came from
        raise ModelOutputError(exc.problem, f"Model {args.model}") from None
    if args.log:
        with PredictionLog(args.log, model_version_for(args.model, args.registry)) as prediction_log:
            prediction_log.observe_faces(seen, [face for entry in results for face in entry["faces"]])
    print(json.dumps(results, indent=2))
    if all("error" in entry for entry in results):
        print('error: none of the images could be read (see the "error" fields).', file=sys.stderr)
        return EXIT_NO_IMAGE_READ
    return EXIT_OK
