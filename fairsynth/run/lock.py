"""One writer per output: ``<output>.lock`` beside each output a run writes (reference, audit,
ADP folder, shards, report), holding the writer's pid and host.

A second run that reaches a locked output stops with a message naming the holder. The flow
takes the locks of every output it will write before its first stage, so a run started while
another is running stops at once, before it has written anything; the stages it then calls
take the same locks again, which within the holding process only counts (re-entrant: the flow
calls its tasks directly, so Prefect runs them in its process; only the batch tasks go to Dask
workers, and they write nothing)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

_HELD: dict[Path, int] = {}  # lock files this process holds, and how many times
_GUARD = threading.Lock()


class OutputBusy(RuntimeError):
    """Another live run is writing the output."""


class OutputLock:
    """One writer per output: ``<output>.lock`` holds the writer's pid and host.

    A lock whose process is gone (same host, pid not alive) is stale and taken over; a live
    holder makes the second run stop with a message naming it.
    """

    def __init__(self, output: str | Path):
        out = Path(output).resolve()  # an alias (symlink) of the output shares its lock
        self.path = out.with_name(out.name + ".lock")
        self.held = False

    def acquire(self) -> OutputLock:
        with _GUARD:
            if _HELD.get(self.path):
                _HELD[self.path] += 1  # this process already holds it (the flow, then a stage)
                self.held = True
                return self
            self._take()
            _HELD[self.path] = 1
            self.held = True
            return self

    def _take(self) -> None:
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder, me["host"]):
                    raise OutputBusy(
                        f"{self.path}: another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}) is writing this output; wait for it or stop it"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return
        raise OutputBusy(f"{self.path}: could not take the lock")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # half-written by a process that died: stale

    def release(self) -> None:
        if not self.held:
            return
        with _GUARD:
            self.held = False
            _HELD[self.path] -= 1
            if _HELD[self.path] == 0:
                del _HELD[self.path]
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def output_locks(outputs: Iterable[str | Path]) -> Iterator[None]:
    """The locks of several outputs, all or none: one held by another run releases the ones
    already taken and raises ``OutputBusy``."""
    with contextlib.ExitStack() as stack:
        for out in dict.fromkeys(Path(o).resolve() for o in outputs):
            stack.enter_context(OutputLock(out))
        yield


def _alive(holder: dict, host: str) -> bool:
    if holder.get("host") != host:
        return True  # another machine's process: cannot check, assume alive
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (KeyError, ValueError, TypeError):
        return False
    return True
