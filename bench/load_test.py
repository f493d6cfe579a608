"""Load test of `fer-pipeline serve`: throughput and latency at 1, 4 and 16 concurrent
clients, for the model and for its flip test-time-augmentation variant, then a barrage of
malformed requests after which the server must still answer.

    .venv/bin/python -m bench.load_test [MODEL] [--registry DIR] [--requests 300] [--seconds 30]

MODEL defaults to run-local's champion (fer-emotion-local@champion in build/local/registry).
The TTA variant is the same Keras model wrapped by ``fer_pipeline.model.with_flip_tta`` and
exported by the server at start-up as the pipeline exports it. Each server runs in its own
process on a free loopback port, with its default limits; every request is one 48x48 face
in Vertex's body. Each level stops after ``--requests`` requests or ``--seconds`` seconds,
whichever comes first; traffic goes to 127.0.0.1 only. The table goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "fer-emotion-local@champion"
DEFAULT_REGISTRY = REPO_ROOT / "build" / "local" / "registry"
LOOPBACK = "127.0.0.1"
READY_PATTERN = re.compile(r"^serving (\S+) v\S+ .* at (http://[^/\s]+)/")
BENCH_NAME = "fer-bench"


# ---- requests -----------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def face_pngs(count_per_class: int = 2, seed: int = 5) -> list[bytes]:
    """FER-style 48x48 gray faces (generated), PNG-encoded."""
    from fer_pipeline import synthetic

    images, _ = synthetic.make_images(count_per_class, seed=seed)
    return [png_bytes(image) for image in images]


def vertex_body(blobs: list[bytes]) -> bytes:
    """Vertex's request body for encoded images."""
    instances = [{"image_bytes": {"b64": base64.b64encode(blob).decode()}} for blob in blobs]
    return json.dumps({"instances": instances}).encode()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` with almost no pixel data: what a decompression
    bomb's header looks like to a server that reads headers first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


class BadRequest(NamedTuple):
    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expected: int  # the status the server should answer with


def malformed_requests(name: str, *, max_instances: int, max_body_bytes: int) -> list[BadRequest]:
    """Requests a server must refuse with a 4xx JSON error naming the problem."""
    face = png_bytes(np.full((48, 48), 120, np.uint8))
    predict, detect = f"/v1/models/{name}:predict", f"/v1/models/{name}:detect"
    json_type = {"Content-Type": "application/json"}
    png_type = {"Content-Type": "image/png"}

    def b64(blob: bytes) -> dict:
        return {"instances": [{"image_bytes": {"b64": base64.b64encode(blob).decode()}}]}

    def as_json(document) -> bytes:
        return json.dumps(document).encode()

    tiff = io.BytesIO()
    from PIL import Image

    Image.new("L", (48, 48)).save(tiff, format="TIFF")
    return [
        BadRequest("bad JSON", "POST", predict, json_type, b'{"instances": [', 400),
        BadRequest("empty body", "POST", predict, json_type, b"", 400),
        BadRequest("JSON null", "POST", predict, json_type, b"null", 400),
        BadRequest("JSON list, not an object", "POST", predict, json_type, b"[1, 2]", 400),
        BadRequest("not UTF-8", "POST", predict, json_type, b"\xff\xfe\xfa\x00", 400),
        BadRequest("nesting 100,000 deep", "POST", predict, json_type, b"[" * 100_000, 400),
        BadRequest("a 5,000-digit number", "POST", predict, json_type, b'{"instances": [' + b"7" * 5000 + b"]}", 400),
        BadRequest("missing instances", "POST", predict, json_type, b'{"images": []}', 400),
        BadRequest("columnar inputs", "POST", predict, json_type, as_json({"inputs": {"image_bytes": []}}), 400),
        BadRequest("instances not a list", "POST", predict, json_type, as_json({"instances": "face.png"}), 400),
        BadRequest("no instances", "POST", predict, json_type, as_json({"instances": []}), 400),
        BadRequest("instance of the wrong shape", "POST", predict, json_type, as_json({"instances": [[1, 2]]}), 400),
        BadRequest("b64 not a string", "POST", predict, json_type, as_json({"instances": [{"b64": 7}]}), 400),
        BadRequest(
            "bad base64", "POST", predict, json_type, as_json({"instances": [{"image_bytes": {"b64": "@@@"}}]}), 400
        ),
        BadRequest("empty image", "POST", predict, json_type, as_json(b64(b"")), 400),
        BadRequest("not an image", "POST", predict, json_type, as_json(b64(b"hello, world")), 400),
        BadRequest("a TIFF", "POST", predict, json_type, as_json(b64(tiff.getvalue())), 400),
        BadRequest("truncated PNG", "POST", predict, json_type, as_json(b64(face[: len(face) // 2])), 400),
        BadRequest(
            "PNG header of 9000x9000", "POST", predict, json_type, as_json(b64(png_header_only(9000, 9000))), 413
        ),
        BadRequest(
            "PNG header of 10^5 squared", "POST", predict, json_type, as_json(b64(png_header_only(10**5, 10**5))), 413
        ),
        BadRequest(
            "unknown signature", "POST", predict, json_type, as_json({**b64(face), "signature_name": "train"}), 400
        ),
        BadRequest(
            "too many instances",
            "POST",
            predict,
            json_type,
            as_json({"instances": b64(face)["instances"] * (max_instances + 1)}),
            413,
        ),
        BadRequest("body too large", "POST", predict, json_type, b" " * (max_body_bytes + 1), 413),
        BadRequest("wrong content type", "POST", predict, {"Content-Type": "text/plain"}, as_json(b64(face)), 415),
        BadRequest("form upload to :predict", "POST", predict, {"Content-Type": "multipart/form-data"}, b"--x--", 415),
        BadRequest(
            "unknown model name", "POST", f"/v1/models/{name}-other:predict", json_type, as_json(b64(face)), 404
        ),
        BadRequest(
            "unknown version", "POST", f"/v1/models/{name}/versions/999:predict", json_type, as_json(b64(face)), 404
        ),
        BadRequest("unknown model status", "GET", f"/v1/models/{name}-other", {}, b"", 404),
        BadRequest("GET on :predict", "GET", predict, {}, b"", 405),
        BadRequest("unknown route", "GET", "/v2/nothing", {}, b"", 404),
        BadRequest("JSON to :detect", "POST", detect, json_type, as_json(b64(face)), 415),
        BadRequest("empty photo", "POST", detect, png_type, b"", 400),
        BadRequest("photo not an image", "POST", detect, png_type, b"GIF89a but not really", 400),
        BadRequest("photo of 10^5 squared", "POST", detect, png_type, png_header_only(10**5, 10**5), 413),
        BadRequest("bad margin", "POST", detect + "?margin=lots", png_type, face, 400),
        BadRequest("unknown query parameter", "POST", detect + "?threshold=0.5", png_type, face, 400),
        BadRequest("query parameter on :predict", "POST", predict + "?margin=0.3", json_type, as_json(b64(face)), 400),
        BadRequest("a verb the server lacks", "POST", f"/v1/models/{name}:explain", json_type, as_json(b64(face)), 404),
        BadRequest("GET on a verb the server lacks", "GET", f"/v1/models/{name}:explain", {}, b"", 404),
    ]


@dataclass(frozen=True)
class Answer:
    label: str
    status: int
    error: str  # the JSON error message; "" when the answer had none


def send_bad_requests(base_url: str, requests: list[BadRequest], timeout: float = 60.0) -> list[Answer]:
    """Send each malformed request; a connection the server drops counts as status 0."""
    answers = []
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        for bad in requests:
            try:
                response = client.request(bad.method, bad.path, headers=bad.headers, content=bad.body)
            except httpx.HTTPError as exc:
                answers.append(Answer(bad.label, 0, f"{type(exc).__name__}: {exc}"))
                continue
            answers.append(Answer(bad.label, response.status_code, json_error(response)))
    return answers


def json_error(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return ""
    return document.get("error", "") if isinstance(document, dict) else ""


# ---- a server in a subprocess ---------------------------------------------------------------


@dataclass
class RunningServer:
    process: subprocess.Popen
    base_url: str
    name: str
    output: Path

    def healthy(self) -> bool:
        try:
            return self.process.poll() is None and httpx.get(self.base_url + "/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def running_server(model: str, output: Path, *extra: str, startup_s: float = 300.0) -> Iterator[RunningServer]:
    """``fer-pipeline serve MODEL --port 0 ...`` in a subprocess until the block ends; its
    output goes to ``output`` (a pipe could fill and stall it)."""
    command = [sys.executable, "-m", "fer_pipeline.cli", "serve", model, "--host", LOOPBACK, "--port", "0", *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    with open(output, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    try:
        name, base_url = wait_until_ready(process, output, startup_s)
        yield RunningServer(process, base_url, name, output)
    finally:
        stop(process)


def wait_until_ready(process: subprocess.Popen, output: Path, startup_s: float) -> tuple[str, str]:
    """The served name and base URL from the server's "serving ..." line."""
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        for line in output.read_text(errors="replace").splitlines():
            match = READY_PATTERN.match(line)
            if match:
                return match.group(1), match.group(2)
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{output.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"the server did not start within {startup_s:.0f} s:\n{output.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelResult:
    clients: int
    latencies_s: list[float]
    failures: int
    seconds: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds else float("nan")

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


async def closed_loop(base_url: str, path: str, bodies: list[bytes], clients: int, requests: int, seconds: float):
    """``clients`` workers each sending its next request as soon as the last one is answered,
    until ``requests`` were sent or ``seconds`` passed."""
    latencies: list[float] = []
    failures = 0
    sent = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, failures
            while sent < requests and time.monotonic() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                started = time.perf_counter()
                response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - started
    return LevelResult(clients, latencies, failures, elapsed)


@dataclass(frozen=True)
class Burst:
    """``clients`` requests sent at once, one each: what a full server does with the rest."""

    clients: int
    statuses: list[int]
    latencies_s: list[float]
    json_errors: int  # refusals that came with a JSON {"error": ...}

    def count(self, status: int) -> int:
        return self.statuses.count(status)

    def slowest_ms(self, status: int) -> float:
        times = [t for s, t in zip(self.statuses, self.latencies_s) if s == status]
        return max(times) * 1000 if times else float("nan")


async def burst(base_url: str, path: str, body: bytes, clients: int) -> Burst:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def one() -> tuple[int, float, bool]:
            started = time.perf_counter()
            response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            return response.status_code, time.perf_counter() - started, bool(json_error(response))

        answers = await asyncio.gather(*(one() for _ in range(clients)))
    return Burst(clients, [a[0] for a in answers], [a[1] for a in answers], sum(a[2] for a in answers))


def overload(server: RunningServer, clients: int) -> Burst:
    body = vertex_body(face_pngs()[:1])
    return asyncio.run(burst(server.base_url, f"/v1/models/{server.name}:predict", body, clients))


def measure(server: RunningServer, levels: list[int], requests: int, seconds: float) -> list[LevelResult]:
    bodies = [vertex_body([blob]) for blob in face_pngs()]
    path = f"/v1/models/{server.name}:predict"
    asyncio.run(closed_loop(server.base_url, path, bodies, 1, 5, 60))  # warm-up, not counted
    return [asyncio.run(closed_loop(server.base_url, path, bodies, n, requests, seconds)) for n in levels]


# ---- the two variants -------------------------------------------------------------------------


def resolve_keras_model(model: str, registry: Path) -> Path:
    """The .keras file of MODEL (a registry reference, a model folder or a .keras file)."""
    from fer_pipeline.export import resolve_keras_file
    from fer_pipeline.registry import LocalRegistry

    path = Path(model)
    return resolve_keras_file(path if path.exists() else LocalRegistry(registry).resolve(model).path)


def write_variants(model: str, registry: Path, scratch: Path) -> dict[str, str]:
    """What to serve for "plain" and "flip TTA": MODEL itself unless it already is a TTA
    wrapper (then its inner model), and the plain model wrapped by with_flip_tta."""
    import keras

    from fer_pipeline.model import load_model, with_flip_tta

    loaded = load_model(resolve_keras_model(model, registry))
    nested = [layer for layer in loaded.layers if isinstance(layer, keras.Model)]
    plain = nested[0] if loaded.name.endswith("_tta") and nested else loaded
    variants = {"plain": model}
    if plain is not loaded:
        (scratch / "plain").mkdir()
        plain.save(scratch / "plain" / "model.keras")
        variants["plain"] = str(scratch / "plain")
    (scratch / "tta").mkdir()
    with_flip_tta(plain).save(scratch / "tta" / "model.keras")
    variants["flip TTA"] = str(scratch / "tta")
    return variants


# ---- the report -------------------------------------------------------------------------------


def cpu_flags() -> str:
    """``lscpu``'s model name and flags, or what is known without it."""
    lscpu = shutil.which("lscpu")
    if not lscpu:
        return "lscpu not found"
    text = subprocess.run([lscpu], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}; flags: {fields.get('Flags', '?').strip()}"


def load_rows(variant: str, results: list[LevelResult]) -> list[list[object]]:
    return [
        [
            variant,
            r.clients,
            len(r.latencies_s),
            r.failures,
            f"{r.seconds:.1f}",
            f"{r.throughput:.1f}",
            f"{r.percentile_ms(50):.0f}",
            f"{r.percentile_ms(95):.0f}",
            f"{r.percentile_ms(99):.0f}",
        ]
        for r in results
    ]


def burst_row(variant: str, result: Burst) -> list[object]:
    others = len(result.statuses) - result.count(200) - result.count(503)
    return [
        variant,
        result.clients,
        result.count(200),
        f"{result.slowest_ms(200):.0f}",
        result.count(503),
        result.json_errors,
        f"{result.slowest_ms(503):.0f}",
        others,
    ]


def barrage_row(variant: str, answers: list[Answer], healthy: bool) -> list[object]:
    statuses = [a.status for a in answers]
    with_message = sum(1 for a in answers if 400 <= a.status < 500 and a.error)
    return [
        variant,
        len(answers),
        sum(400 <= s < 500 for s in statuses),
        with_message,
        sum(s >= 500 for s in statuses),
        sum(s == 0 or s < 400 for s in statuses),
        "yes" if healthy else "NO",
    ]


def main(argv: list[str] | None = None) -> int:
    from bench._common import append_section, load_average, markdown_table
    from fer_pipeline.serve_limits import Limits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    parser.add_argument("--requests", type=int, default=300, help="most requests per level (default 300)")
    parser.add_argument("--seconds", type=float, default=30.0, help="most seconds per level (default 30)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per level (default 1,4,16)")
    parser.add_argument("--no-write", action="store_true", help="print the tables, do not append them to the docs")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.clients.split(",")]

    load_before = load_average()
    limits = Limits()
    rows, bursts, barrage, answers_by_variant = [], [], [], {}
    with tempfile.TemporaryDirectory(prefix="fer-load-") as tmp:
        scratch = Path(tmp)
        for variant, target in write_variants(args.model, args.registry, scratch).items():
            log_file = scratch / f"{variant.replace(' ', '-')}.log"
            with running_server(target, log_file, "--registry", str(args.registry), "--name", BENCH_NAME) as server:
                print(f"{variant}: serving {target} at {server.base_url}", flush=True)
                rows += load_rows(variant, measure(server, levels, args.requests, args.seconds))
                full = overload(server, 4 * (limits.max_concurrent + limits.max_queue))
                bursts.append(burst_row(variant, full))
                answers = send_bad_requests(
                    server.base_url,
                    malformed_requests(
                        server.name, max_instances=limits.max_instances, max_body_bytes=limits.max_body_bytes
                    ),
                )
                answers_by_variant[variant] = answers
                barrage.append(barrage_row(variant, answers, server.healthy()))
                crashed = "Unexpected error" in log_file.read_text(errors="replace")
                if crashed:
                    print(log_file.read_text()[-5000:])
                    barrage[-1].append("a 500 was logged")

    headers = ["variant", "clients", "answered", "failed", "s", "req/s", "p50 ms", "p95 ms", "p99 ms"]
    table = markdown_table(headers, rows)
    table += "\n\n" + markdown_table(
        [
            "variant",
            "requests at once",
            "200",
            "slowest 200 ms",
            "503 (full)",
            "with a JSON error",
            "slowest 503 ms",
            "other",
        ],
        bursts,
    )
    table += "\n\n" + markdown_table(
        ["variant", "malformed requests", "4xx", "4xx with a JSON message", "5xx", "other/dropped", "healthy after"],
        barrage,
    )
    first = next(iter(answers_by_variant.values()))
    table += "\n\n" + markdown_table(
        ["malformed request", "status", "message"], [[a.label, a.status, a.error.replace("|", "\\|")] for a in first]
    )
    notes = [
        f"model: {args.model} (registry {args.registry}); TTA: the same model wrapped by with_flip_tta "
        "(2 views), exported by the server at start-up",
        f"server: `fer-pipeline serve` on {LOOPBACK}, default limits (max-concurrent {limits.max_concurrent}, "
        f"max-queue {limits.max_queue}, max-instances {limits.max_instances}); one 48x48 PNG face per request, "
        "Vertex's body; clients: httpx.AsyncClient, closed loop, in one process on the same cores",
        f"bounds: at most {args.requests} requests or {args.seconds:g} s per level, after 5 warm-up requests",
        f"CPU (lscpu): {cpu_flags()}",
    ]
    if args.no_write:
        print(table)
        return 0
    append_section(
        "Serving: fer-pipeline serve under load, then malformed input", table, load_before=load_before, notes=notes
    )
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
