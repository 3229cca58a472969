"""`dvc exp run` that leaves the workspace as it found it when the experiment fails.

`dvc exp run -S key=value` writes the values into params.yaml before it runs the stages, and a failed run leaves them
there. The stages' outputs survive a failure on their own (every output is `persist: true` and written atomically);
this puts params.yaml back too:

    python -m lifecycle.experiments -S pretrain.max_steps=200      # = make exp ARGS='-S pretrain.max_steps=200'

Every argument goes to `dvc exp run` unchanged; the exit status is DVC's.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lifecycle.io import atomic_path

PARAMS = Path("params.yaml")


def run_experiment(args: list[str], params: Path = PARAMS) -> int:
    before = params.read_bytes() if params.exists() else None
    status = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args]).returncode
    if status and before is not None and (not params.exists() or params.read_bytes() != before):
        with atomic_path(params) as tmp:
            tmp.write_bytes(before)
        print(f"{params}: restored to its state before the failed experiment (its -S values were: "
              f"{' '.join(a for a in args if '=' in a) or 'none'})", file=sys.stderr)
    return status


def main() -> None:
    sys.exit(run_experiment(sys.argv[1:]))


if __name__ == "__main__":
    main()
