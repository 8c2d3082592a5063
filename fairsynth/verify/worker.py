"""A verifier in its own process: a tiny framed protocol over the worker's stdin/stdout.

Each message is a JSON header and an optional numpy array: ``>I`` header length, the header,
``>Q`` payload length, the payload (``np.save`` bytes, no pickle). The client starts the worker
(``python -m MODULE``), sends it a ``start`` message with its config, then one ``call`` per
batch. If the worker dies (a crash, the OOM killer, a kill), the client reports it, starts a new
worker and retries the batch, up to ``retries`` times: a batch is never silently lost.

Keeping deepface (and TensorFlow, where installed) out of the torch generation process contains
its crashes and its memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import warnings
from typing import BinaryIO

import numpy as np


class WorkerError(RuntimeError):
    """The worker answered with an error (bad config, missing weights): not retried."""


class WorkerCrashed(RuntimeError):
    """The worker died and the retries are spent."""


def write_message(stream: BinaryIO, header: dict, array: np.ndarray | None = None) -> None:
    blob = json.dumps(header).encode()
    payload = b""
    if array is not None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        payload = buf.getvalue()
    stream.write(struct.pack(">I", len(blob)) + blob + struct.pack(">Q", len(payload)) + payload)
    stream.flush()


def read_message(stream: BinaryIO) -> tuple[dict, np.ndarray | None]:
    header = json.loads(_read_exactly(stream, struct.unpack(">I", _read_exactly(stream, 4))[0]))
    size = struct.unpack(">Q", _read_exactly(stream, 8))[0]
    array = None
    if size:
        array = np.load(io.BytesIO(_read_exactly(stream, size)), allow_pickle=False)
    return header, array


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError("the other side closed the stream")
        data += chunk
    return data


def serve(handler_factory) -> None:
    """The worker's main loop: ``handler_factory(config) -> handler(header, array)``."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol stream
    handler = None
    while True:
        try:
            header, array = read_message(stdin)
        except EOFError:
            return
        try:
            if header.get("op") == "start":
                handler = handler_factory(header.get("config", {}))
                write_message(stdout, {"ok": True, "pid": os.getpid()})
            elif header.get("op") == "call" and handler is not None:
                reply, out = handler(header, array)
                write_message(stdout, {"ok": True, **reply}, out)
            else:
                write_message(stdout, {"ok": False, "error": f"unexpected message {header}"})
        except Exception as exc:  # reported to the client, which raises WorkerError
            write_message(stdout, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})


class WorkerClient:
    """Runs ``python -m module`` and calls it; restarts it and retries when it dies."""

    def __init__(
        self, module: str, config: dict, retries: int = 2, env: dict[str, str] | None = None
    ):
        self.module, self.config, self.retries = module, config, retries
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.crashes: list[str] = []
        self._stderr = tempfile.TemporaryFile()

    def _start(self) -> None:
        self._stderr.seek(0)
        self._stderr.truncate()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self.env,
        )
        reply = self._exchange({"op": "start", "config": self.config}, None)[0]
        if not reply.get("ok"):
            self.close()
            raise WorkerError(f"{self.module} could not start: {reply.get('error')}")

    def _exchange(self, header: dict, array: np.ndarray | None):
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        write_message(self.proc.stdin, header, array)
        return read_message(self.proc.stdout)

    def stderr_tail(self, n: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n:]

    def _report_death(self, when: str) -> str:
        code = self.proc.wait() if self.proc is not None else None
        msg = f"{self.module} worker died {when} (exit code {code}): {self.stderr_tail(500)}"
        self.crashes.append(msg)
        self.proc = None
        return msg

    def call(self, header: dict, array: np.ndarray | None = None):
        if self.proc is not None and self.proc.poll() is not None:
            msg = self._report_death("between batches")
            warnings.warn(msg + " -- starting a new one", stacklevel=2)
        for attempt in range(self.retries + 1):
            try:
                if self.proc is None:
                    self._start()
                reply, out = self._exchange({"op": "call", **header}, array)
            except (EOFError, BrokenPipeError, ConnectionResetError, struct.error):
                msg = self._report_death("during a batch")
                if attempt < self.retries:
                    warnings.warn(msg + " -- restarting it and retrying the batch", stacklevel=2)
                    continue
                raise WorkerCrashed(f"{msg} (after {self.retries} retries)") from None
            if not reply.get("ok"):
                raise WorkerError(reply.get("error", "unknown worker error"))
            return reply, out
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def close(self) -> None:
        if self.proc is not None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
