"""Headless Chromium over the DevTools protocol, in plain Python (websocket-client).

Used by tests/test_report_browser.py to open the HTML report as a person would, and by
``make report-screenshot`` to take a picture of it:

    python tests/browser.py check REPORT.html [--width 390]
    python tests/browser.py screenshot REPORT.html OUT.png [--width 1000] [--max-kb 500]

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when absent), or
whatever ``$CHROMIUM`` names. It runs headless, sandbox off (we run as root in CI), no
GPU, no network features, a fresh profile, and DevTools on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0

# Run in the page once it has loaded: what the report test checks.
PAGE_FACTS = """(() => {
  const images = [...document.images].map(img => ({
    alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
    shownWidth: img.getBoundingClientRect().width}));
  const tables = [...document.querySelectorAll('table')].map(t => t.querySelectorAll('tbody tr').length);
  return JSON.stringify({
    title: document.title,
    images,
    classRows: document.querySelectorAll('tr.class-row').length,
    classNames: [...document.querySelectorAll('tr.class-row th')].map(th => th.textContent),
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    tables,
    viewportWidth: window.innerWidth,
    documentWidth: document.documentElement.scrollWidth,
    bodyFontPx: parseFloat(getComputedStyle(document.body).fontSize),
    firstCardTop: (document.querySelector('.card') || document.body).getBoundingClientRect().top,
    readyState: document.readyState,
  });
})()"""


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM``, else the first of CANDIDATES on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; ``with Browser() as b: b.open(path)``."""

    def __init__(self, binary: str | None = None):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("Chromium not found: apt-get install chromium (or set CHROMIUM=/path/to/chrome).")
        self.events: list[dict] = []
        self._next_id = 0
        self._process = None
        self._socket = None
        self._profile = None

    # ---------------------------------------------------------------- life cycle
    def __enter__(self) -> Browser:
        import websocket

        self._profile = tempfile.mkdtemp(prefix="fer-chromium-")
        self._process = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._wait_for_port()
        page = self._http(port, "/json/new?about:blank", method="PUT")
        self._socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=CALL_TIMEOUT, suppress_origin=True
        )
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)

    def _wait_for_port(self) -> int:
        """DevTools writes its port to DevToolsActivePort in the profile once it listens."""
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"{self.binary} exited with code {self._process.returncode} at start-up.")
            if marker.is_file():
                lines = marker.read_text().splitlines()
                if lines and lines[0].strip().isdigit():
                    return int(lines[0])
            time.sleep(0.1)
        raise BrowserError(f"{self.binary} did not open its DevTools port within {START_TIMEOUT:.0f} s.")

    @staticmethod
    def _http(port: int, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:
            return json.loads(response.read())

    # ---------------------------------------------------------------- protocol
    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events met meanwhile are kept in ``events``."""
        self._next_id += 1
        mine = self._next_id
        self._socket.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(self._socket.recv())
            if message.get("id") == mine:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise BrowserError(f"{method}: no answer within {CALL_TIMEOUT:.0f} s")

    def wait_for(self, event: str, timeout: float = CALL_TIMEOUT) -> dict:
        """The first ``event`` (already received or arriving within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.events:
                if message.get("method") == event:
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no {event} within {timeout:.0f} s")
            self._socket.settimeout(remaining)
            try:
                message = json.loads(self._socket.recv())
            finally:
                self._socket.settimeout(CALL_TIMEOUT)
            if "method" in message:
                self.events.append(message)

    # ---------------------------------------------------------------- pages
    def open(self, path: str | Path, *, width: int = 1000, height: int = 800, mobile: bool = False) -> None:
        """Load a local file at a viewport size and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        path = Path(path).resolve()
        if path.suffix.lower() not in (".html", ".htm"):  # kfp's HTML artifact is a bare "report": Chromium
            copy = Path(self._profile) / "page.html"  # would show a file without .html as text
            shutil.copyfile(path, copy)
            path = copy
        self.events.clear()
        self.call("Page.navigate", url=path.as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def facts(self) -> dict:
        """PAGE_FACTS of the loaded page."""
        return json.loads(self.evaluate(PAGE_FACTS))

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors since the last ``open``."""
        errors = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(
                    "console.error: "
                    + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", []))
                )
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, out: str | Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out


def check_report(path: str | Path, *, width: int = 390) -> dict:
    """Open a report at a phone's width: its facts and console errors."""
    with Browser() as browser:
        browser.open(path, width=width, height=844, mobile=width < 600)
        facts = browser.facts()
        facts["consoleErrors"] = browser.console_errors()
    return facts


def shrink_png(path: Path, max_kb: int) -> Path:
    """Re-save a PNG with a 256-colour palette when it is over ``max_kb`` (text stays sharp)."""
    if path.stat().st_size <= max_kb * 1024:
        return path
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, format="PNG", optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="print the page facts and console errors as JSON")
    check.add_argument("report", type=Path)
    check.add_argument("--width", type=int, default=390)
    shot = sub.add_parser("screenshot", help="write a full-page PNG")
    shot.add_argument("report", type=Path)
    shot.add_argument("out", type=Path)
    shot.add_argument("--width", type=int, default=1000, help="viewport width in CSS pixels")
    shot.add_argument("--max-kb", type=int, default=500, help="palette-compress above this size (0: never)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report} not found", file=sys.stderr)
        return 2
    try:
        if args.command == "check":
            facts = check_report(args.report, width=args.width)
            print(json.dumps(facts, indent=2))
            return 1 if facts["consoleErrors"] else 0
        with Browser() as browser:
            browser.open(args.report, width=args.width)
            browser.screenshot(args.out)
        if args.max_kb:
            shrink_png(args.out, args.max_kb)
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
        return 0
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
