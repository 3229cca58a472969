"""Local networking for the servers the benchmarks and tests start (ours, llama-server, containers)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request

from lifecycle.core import StageError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(process: subprocess.Popen, url: str, server_log, what: str, timeout: float) -> None:
    """Until `url` (a health or readiness probe) answers 200; one line, with the last line of `server_log` (a file
    the server writes its log to), if the server exits or is not up within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise StageError(f"{what}: not up after {timeout:.0f} s")
        time.sleep(0.3)
    server_log.seek(0)
    last = (server_log.read().strip() or "no output").splitlines()[-1]
    raise StageError(f"{what} exited ({process.returncode}): {last}")
