"""The settings file from the command line (pipelines/settings.py is the loader).

    python -m pipelines.settings_cli from-terraform [--config config/submit.env]
        writes the terraform outputs of infra/gcp into the config file (keeping its
        other keys and comments); `make infra-config` runs it.
    python -m pipelines.settings_cli show [--target vertex|kind] [--config FILE]
        prints the merged, checked settings as JSON.
    python -m pipelines.settings_cli make-vars [--config FILE]
        prints ``KEY=VALUE ...`` on one line: the config file's PROJECT, REGION, REPO
        and REGISTRY, for mk/cloud.mk. On a bad file it prints the one-line problem on
        stdout instead and exits 2: make shows it with $(error) and stops.

Exit codes: 0 done, 2 the settings or the command line are wrong (one message, no
traceback).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fer_pipeline.cli_parser import OneLineParser
from fer_pipeline.errors import ConfigError
from pipelines.settings import DEFAULT_CONFIG, TARGETS, load_settings, make_values
from pipelines.settings_file import terraform_values, update_env_file


def from_terraform(tf: str, tf_dir: str, config: Path) -> None:
    """Run ``terraform output -json`` and write its values into ``config``."""
    try:
        result = subprocess.run(
            [tf, f"-chdir={tf_dir}", "output", "-json"], capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise ConfigError(f"cannot run {tf!r} ({exc.strerror}): install terraform or set TF=.") from None
    if result.returncode != 0:
        raise ConfigError(f"terraform output failed:\n{result.stderr.strip()}")
    try:
        values = terraform_values(json.loads(result.stdout or "{}"))
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"`{tf} output -json` in {tf_dir} did not print a JSON object.") from None
    if not values:
        raise ConfigError(f"no outputs in {tf_dir}: run `make infra-plan infra-apply` first.")
    update_env_file(config, values)
    for key, value in values.items():
        print(f"{config}: {key}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m pipelines.settings_cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tf = sub.add_parser("from-terraform", help="write terraform outputs into the config file")
    tf.add_argument("--tf", default="terraform")
    tf.add_argument("--tf-dir", default="infra/gcp")
    tf.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    show = sub.add_parser("show", help="print the merged settings as JSON")
    show.add_argument("--target", default="vertex", choices=TARGETS)
    show.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    make = sub.add_parser("make-vars", help="print the file's values make reads, KEY=VALUE on one line")
    make.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    if args.command == "make-vars":
        try:
            print(" ".join(f"{key}={value}" for key, value in make_values(args.config).items()))
        except ConfigError as exc:
            print(" ".join(str(exc).split()).rstrip("."))  # one line: make's $(error) adds ".  Stop."
            return 2
        return 0
    try:
        if args.command == "from-terraform":
            from_terraform(args.tf, args.tf_dir, args.config)
        else:
            settings = load_settings(args.target, args.config)
            print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()}, indent=2))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
