"""Talking to a server from Python (standard library only): start ``mtkit serve`` in a child
process and wait until it is ready, and send one request. The tests and the load benchmark
use these; so can scripts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

READY = re.compile(r"mtkit: serving .* at (http://\S+/) ")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str, path: str, body: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None,
    method: str | None = None, timeout: float = 60,
) -> Reply:
    """One HTTP request; ``body`` is sent as JSON, ``data`` as it is. Error statuses are returned,
    not raised."""
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


class ServerProcess:
    """``mtkit serve ARGS --port 0`` in a child process; ``url`` once it is ready.

    Use as a context manager: leaving it sends SIGTERM and waits for the server to drain."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 120) -> None:
        command = [sys.executable, "-m", "mtkit", "serve", "--port", "0", *map(str, args)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.log: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read_log, daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"mtkit serve did not start:\n{''.join(self.log)}")

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            if match := READY.search(line):
                self.url = match.group(1)
                self._ready.set()

    def call(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return call(self.url, path, body, **kwargs)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
