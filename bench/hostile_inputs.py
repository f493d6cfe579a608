"""Every `fer-pipeline` subcommand against hostile inputs made here: each must refuse in
one line with exit 1 or 2, show no traceback, and write nothing.

    .venv/bin/python -m bench.hostile_inputs          # each case as a real process
    (tests/test_hostile_inputs.py runs the same cases in-process in `make test`)

The inputs: a damaged zip, an archive bomb, a zip with a false UTF-8 flag, a CSV of
garbage, a folder with a Latin-1 file name and no layout, a damaged `.keras` file, a
metrics file that is not JSON, a photo whose header claims 900 Mpx, a registry and a run
index of the wrong shape, a prediction log that is not one, out-of-range options, and output paths that are files where
folders are needed.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_inputs(root: Path) -> dict[str, Path]:
    """Write the hostile inputs under ``root``; returns them by name."""
    root.mkdir(parents=True, exist_ok=True)
    made = {"root": root}
    made["damaged_zip"] = root / "damaged.zip"
    made["damaged_zip"].write_bytes(b"PK\x03\x04 cut short")
    made["bomb_zip"] = root / "bomb.zip"
    with zipfile.ZipFile(made["bomb_zip"], "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for split in ("train", "test"):
            archive.writestr(f"{split}/happy/bomb.jpg", bytes(8 * 2**20))
    made["flagged_zip"] = root / "flagged.zip"
    with zipfile.ZipFile(made["flagged_zip"], "w") as archive:
        archive.writestr("train/happy/cafe.jpg", b"x")
    data = bytearray(made["flagged_zip"].read_bytes())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<H", data, central + 8, struct.unpack_from("<H", data, central + 8)[0] | 0x800)
    name_at = central + 46
    data[name_at : name_at + 20] = bytes(data[name_at : name_at + 20]).replace(b"cafe", b"caf\xe9")
    made["flagged_zip"].write_bytes(bytes(data))
    made["garbage_csv"] = root / "fer2013.csv"
    made["garbage_csv"].write_bytes(b"emotion,pixels\n\xff\xfe,\x00\x01\n" + b"9," * 1000 + b"\n")
    made["latin1_dir"] = root / "latin1"
    made["latin1_dir"].mkdir(exist_ok=True)
    Path(os.fsdecode(os.path.join(os.fsencode(made["latin1_dir"]), b"caf\xe9.jpg"))).write_bytes(b"not an image")
    made["damaged_keras"] = root / "model.keras"
    made["damaged_keras"].write_bytes(b"\x00half a download")
    made["bad_metrics"] = root / "metrics.json"
    made["bad_metrics"].write_text("{accuracy: high}")
    made["huge_png"] = root / "huge.png"
    made["huge_png"].write_bytes(_png_header(30_000, 30_000))
    made["bad_registry"] = root / "registry"
    made["bad_registry"].mkdir(exist_ok=True)
    (made["bad_registry"] / "index.json").write_text(json.dumps({"format_version": 1, "models": []}))
    made["bad_runs"] = root / "runs.json"
    made["bad_runs"].write_text(json.dumps({"format_version": 1, "runs": [3, "x"]}))
    made["monitor_log"] = root / "predictions.jsonl"  # one valid prediction-log line
    line = {"time": "t", "model_version": "m", "face_size": None, "brightness": 90, "contrast": 30}
    made["monitor_log"].write_text(json.dumps(line | {"predicted": "sad", "confidence": 0.5}) + "\n")
    made["a_file"] = root / "a-file"
    made["a_file"].write_text("in the way")
    return made


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # {placeholders} from make_inputs, {out} = a path that must stay absent


CASES = [
    Case("validate a damaged zip", ("validate", "{damaged_zip}")),
    Case("validate an archive bomb", ("validate", "{bomb_zip}")),
    Case("validate a false UTF-8 flag", ("validate", "{flagged_zip}")),
    Case("validate a garbage CSV", ("validate", "{garbage_csv}")),
    Case("validate a folder with a Latin-1 name and no layout", ("validate", "{latin1_dir}")),
    Case("validate --json into a folder", ("validate", "{damaged_zip}", "--json", "{root}")),
    Case("ingest an archive bomb", ("ingest", "{bomb_zip}", "--out", "{out}")),
    Case("ingest a missing source", ("ingest", "{root}/absent.zip", "--out", "{out}")),
    Case("ingest --out a file", ("ingest", "{bomb_zip}", "--out", "{a_file}")),
    Case("split a dataset that is not one", ("split", "{latin1_dir}", "--out", "{out}")),
    Case("split --val-fraction 2", ("split", "{latin1_dir}", "--out", "{out}", "--val-fraction", "2")),
    Case(
        "train-frozen --batch-size 0",
        ("train-frozen", "{latin1_dir}", "--split", "{a_file}", "--out", "{out}", "--batch-size", "0"),
    ),
    Case(
        "train-frozen --frozen-lr -1",
        ("train-frozen", "{latin1_dir}", "--split", "{a_file}", "--out", "{out}", "--frozen-lr=-1"),
    ),
    Case(
        "fine-tune --out below a file",
        ("fine-tune", "{latin1_dir}", "--split", "{a_file}", "--model", "{damaged_keras}", "--out", "{a_file}/x"),
    ),
    Case("evaluate a damaged model", ("evaluate", "{latin1_dir}", "--model", "{damaged_keras}", "--out", "{out}")),
    Case(
        "register metrics that are not JSON",
        ("register", "--model", "{damaged_keras}", "--metrics", "{bad_metrics}", "--registry", "{out}"),
    ),
    Case(
        "register a damaged model",
        ("register", "--model", "{damaged_keras}", "--metrics", "{root}/ok.json", "--registry", "{out}"),
    ),
    Case("run --val-fraction 1.5", ("run", "{bomb_zip}", "--out", "{out}", "--val-fraction", "1.5")),
    Case("run --val-fraction 0", ("run", "{bomb_zip}", "--out", "{out}", "--val-fraction", "0")),
    Case("run --out a file", ("run", "{bomb_zip}", "--out", "{a_file}")),
    Case("run --preset unknown", ("run", "{bomb_zip}", "--out", "{out}", "--preset", "turbo")),
    Case("models list a wrong-shape registry", ("models", "list", "--registry", "{bad_registry}")),
    Case("models show an unknown model", ("models", "show", "nope@champion", "--registry", "{bad_registry}")),
    Case("predict with a damaged model", ("predict", "{damaged_keras}", "{huge_png}")),
    Case("predict --annotate a file", ("predict", "{damaged_keras}", "{huge_png}", "--annotate", "{a_file}")),
    Case("runs list a wrong-shape index", ("runs", "list", "--index", "{bad_runs}")),
    Case("runs compare a wrong-shape index", ("runs", "compare", "--index", "{bad_runs}")),
    Case("predict --log a folder", ("predict", "{damaged_keras}", "{huge_png}", "--log", "{root}")),
    Case("monitor a log that is not JSON lines", ("monitor", "{bad_metrics}", "--against", "{damaged_zip}")),
    Case("monitor against a damaged zip", ("monitor", "{monitor_log}", "--against", "{damaged_zip}")),
    Case("monitor --drift below --watch", ("monitor", "{monitor_log}", "--against", "{root}", "--drift", "0.05")),
    Case("serve a damaged model", ("serve", "{damaged_keras}", "--port", "0")),
    Case(
        "serve from a wrong-shape registry", ("serve", "nope@champion", "--registry", "{bad_registry}", "--port", "0")
    ),
    Case("serve --max-instances 0", ("serve", "{damaged_keras}", "--max-instances", "0")),
    Case("serve --log a folder", ("serve", "{damaged_keras}", "--log", "{root}")),
]


def argv_for(case: Case, made: dict[str, Path], out: Path) -> list[str]:
    values = {key: str(value) for key, value in made.items()} | {"out": str(out)}
    return [part.format(**values) for part in case.argv]


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def check(case: Case, code: int, err: str, before: dict, after: dict, out: Path) -> list[str]:
    """What is wrong with one case's outcome ([] = refused as it should be)."""
    problems = []
    if code not in (1, 2):
        problems.append(f"exit {code}, expected 1 or 2")
    if "Traceback" in err:
        problems.append("a traceback on stderr")
    if not err.strip():
        problems.append("no message on stderr")
    if after != before or out.exists():
        problems.append(f"wrote {sorted(set(after) - set(before)) or str(out)}")
    return problems


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="fer-hostile-") as tmp:
        made = make_inputs(Path(tmp) / "inputs")
        (made["root"] / "ok.json").write_text(json.dumps({"accuracy": 0.5, "macro_f1": 0.4}))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        for case in CASES:
            out = Path(tmp) / "out"
            before = snapshot(made["root"])
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "fer_pipeline.cli", *argv_for(case, made, out)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
            )
            problems = check(case, result.returncode, result.stderr, before, snapshot(made["root"]), out)
            last = (result.stderr.strip().splitlines() or [""])[-1][:110]
            status = "ok" if not problems else "FAIL: " + "; ".join(problems)
            print(
                f"{case.name:52s} exit {result.returncode} {time.perf_counter() - started:5.1f} s  {status}\n    {last}"
            )
            failures += bool(problems)
    print(f"\n{len(CASES) - failures} of {len(CASES)} refused cleanly")
    return 1 if failures else 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
