"""The server's side of continuous batching: one decoder process per ONNX LM variant (lifecycle.serving.decoder),
fed requests as they come and answering each decode step's tokens, which go to their requests' futures and streams
on the event loop. A decoder that dies fails only the requests it held, and is started again."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
from asyncio.subprocess import PIPE
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lifecycle.core import StageError

if TYPE_CHECKING:
    from lifecycle.serving.engine import Served
    from lifecycle.serving.telemetry import Metrics

log = logging.getLogger("llm-lifecycle.serve")
START_TIMEOUT_S = 120
LINE_LIMIT = 1 << 24  # a message's bytes at most (the tokens of every row that ended in one step)


@dataclass
class Pending:
    """A request in the decoder: its future, its stream (if any), its token budget, the message that added it, and
    the tokens so far."""
    future: asyncio.Future
    max_tokens: int
    stream: asyncio.Queue | None = None
    message: dict = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)


class DecoderProcess:
    """Continuous batching of `served`'s LM in a child process (`slots` rows at most, `threads` ORT threads). Its
    pipes are read and written by the event loop itself: no thread of ours competes with it for the GIL."""

    def __init__(self, served: Served, model: Path, slots: int, threads: int | None, metrics: Metrics):
        self.served, self.model, self.slots, self.threads, self.metrics = served, model, slots, threads, metrics
        self.pending: dict[int, Pending] = {}
        self.ids = itertools.count()
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task | None = None
        self.stopping = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "lifecycle.serving.decoder", str(self.model),
                "--eos", str(self.served.lm_tokenizer.eos_token_id), "--threads", str(self.threads or 0),
                "--slots", str(self.slots)]

    async def start(self) -> None:
        """Starts the process and waits until its model is loaded; a model that cannot load is a StageError."""
        self.stopping = False
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                       os.environ.get("PYTHONPATH")])))
        self.process = await asyncio.create_subprocess_exec(*self.command(), stdin=PIPE, stdout=PIPE, env=env,
                                                            limit=LINE_LIMIT)
        try:
            first = await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            first = b'{"fatal": "not ready after %d s"}' % START_TIMEOUT_S
        hello = json.loads(first) if first.strip() else {"fatal": f"exited with code {await self.process.wait()}"}
        if "ready" not in hello:
            raise StageError(f"serve: the decoder of {self.served.variant} ({self.model}) did not start: "
                             f"{hello.get('fatal')}")
        self.reader = asyncio.create_task(self.read(self.process))
        log.info("continuous batching of %s: decoder process %d, %d slots", self.served.variant, self.process.pid,
                 self.slots)

    async def stop(self) -> None:
        self.stopping = True
        if self.process and self.process.returncode is None:
            self.send({"op": "stop"})
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()

    def send(self, message: dict) -> None:
        if self.process is None or self.process.stdin.is_closing():
            return  # a dead process: its reader fails what it held
        self.process.stdin.write((json.dumps(message) + "\n").encode())

    async def submit(self, payload: dict) -> dict:
        """The generation of a checked request: {"token_ids", "text", "eos"} as Served.generate answers; its tokens
        also go to payload["stream"] (None at the end) when it streams."""
        rid = next(self.ids)
        message = {"op": "add", "id": rid, "ids": payload["ids"], "max_tokens": payload["max_tokens"],
                   "temperature": payload["temperature"], "top_p": payload["top_p"], "seed": payload["seed"],
                   "stream": payload.get("stream") is not None}
        pending = Pending(asyncio.get_running_loop().create_future(), payload["max_tokens"], payload.get("stream"),
                          message)
        self.pending[rid] = pending
        self.send(message)
        try:
            return await pending.future
        except asyncio.CancelledError:  # the request timed out or its client left: free its slot
            self.send({"op": "cancel", "id": rid})
            raise
        finally:
            self.end(rid)

    def end(self, rid: int) -> None:
        pending = self.pending.pop(rid, None)
        if pending and pending.stream is not None:
            pending.stream.put_nowait(None)

    async def read(self, process: asyncio.subprocess.Process) -> None:
        """Each message of the process as it comes; at EOF the process died."""
        while line := await process.stdout.readline():
            self.dispatch(json.loads(line))
        await process.wait()
        await self.died(process)

    def dispatch(self, message: dict) -> None:
        for rows in message["batches"]:
            self.metrics.batch_size.labels("generate").observe(rows)
        for rid, tokens, done in message["tokens"]:
            pending = self.pending.get(rid)
            if pending is None or pending.future.done():
                continue
            pending.tokens += tokens
            for token in tokens if pending.stream is not None else ():
                pending.stream.put_nowait(token)
            if done:
                pending.future.set_result(self.served.generated(pending.tokens, pending.max_tokens))
        for rid, error in message["errors"]:
            pending = self.pending.get(rid)
            log.warning("decoder of %s: request failed: %s", self.served.variant, error)
            if pending is not None and not pending.future.done():
                pending.future.set_exception(RuntimeError(error))

    async def died(self, process: asyncio.subprocess.Process) -> None:
        """The process ended: every request it held fails; unless the server is stopping, a new one starts, and
        takes the requests that came while it was starting."""
        if self.stopping or process is not self.process:
            return
        log.error("decoder of %s exited (code %s): failing %d requests and starting it again", self.served.variant,
                  process.returncode, len(self.pending))
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the decoder process exited"))
        self.metrics.failed_batches.labels("generate", "true").inc()
        await self.start()
        for pending in list(self.pending.values()):
            if not pending.future.done():
                self.send(pending.message)

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None


class DecoderPool:
    """`processes` decoder processes of one variant (serve.decoders) sharing `slots` rows (serve.max_batch_size); a
    request goes to the one with the fewest in flight, so that each keeps a core busy."""

    def __init__(self, served: Served, model: Path, slots: int, threads: int | None, metrics: Metrics,
                 processes: int = 1):
        n = min(processes, slots)  # `slots` rows in all, split as evenly as they go
        self.processes = [DecoderProcess(served, model, slots // n + (i < slots % n), threads, metrics)
                          for i in range(n)]

    async def start(self) -> None:
        for process in self.processes:
            await process.start()

    async def stop(self) -> None:
        for process in self.processes:
            await process.stop()

    async def submit(self, payload: dict) -> dict:
        return await min(self.processes, key=lambda p: p.in_flight).submit(payload)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.processes)

    @property
    def pids(self) -> list[int | None]:
        return [p.pid for p in self.processes]
