"""Print the project's runtime requirements (pyproject.toml) for one image variant.

    python3 pyproject_reqs.py PYPROJECT --extras pipeline [--drop tensorflow-cpu] [--add 'tensorflow[and-cuda]==2.21.0']

The image build installs these with `pip install -c <lock> -r <this output>` before the
project itself (`pip install --no-deps .`), so dependency layers are cached apart from
the source. `--drop` removes a requirement by (normalised) name: the GPU image drops
`tensorflow-cpu` (pinned for CPU machines in pyproject.toml and requirements.lock) and
adds `tensorflow[and-cuda]` at the same version instead. Standard library only (3.11+).
"""

from __future__ import annotations

import argparse
import re
import sys

import tomllib


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise SystemExit(f"cannot parse requirement {requirement!r}")
    return canonical(match.group(1))


def requirements(pyproject: dict, extras: list[str], drop: list[str], add: list[str]) -> list[str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted += optional[extra]
    dropped = {canonical(name) for name in drop}
    missing = dropped - {requirement_name(r) for r in wanted}
    if missing:
        raise SystemExit(f"--drop {sorted(missing)}: not a requirement of the project")
    return [r for r in wanted if requirement_name(r) not in dropped] + list(add)


def filter_lock(lock_text: str, drop: list[str]) -> str:
    """The lock without the dropped pins (for the GPU image's constraints file)."""
    dropped = {canonical(name) for name in drop}
    kept = [
        line
        for line in lock_text.splitlines()
        if not line.strip() or line.lstrip().startswith("#") or requirement_name(line) not in dropped
    ]
    return "\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", nargs="?", default="pyproject.toml")
    parser.add_argument("--extras", default="", help="comma-separated extras")
    parser.add_argument("--drop", action="append", default=[], help="requirement name to leave out")
    parser.add_argument("--add", action="append", default=[], help="requirement to add")
    parser.add_argument("--filter-lock", metavar="LOCK", help="print LOCK without the --drop pins instead")
    args = parser.parse_args(argv)
    if args.filter_lock:
        with open(args.filter_lock, encoding="utf-8") as handle:
            sys.stdout.write(filter_lock(handle.read(), args.drop))
        return 0
    with open(args.pyproject, "rb") as handle:
        data = tomllib.load(handle)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    print("\n".join(requirements(data, extras, args.drop, args.add)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
