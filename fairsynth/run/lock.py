"""TODO docstring"""

from __future__ import annotations

import json
import os
from pathlib import Path


class OutputLock:
    """One writer per output folder: ``<output dir>.lock`` holds the writer's pid and host.

    A lock whose process is gone (same host, pid not alive) is stale and taken over; a live
    holder makes the second run stop with a message naming it.
    """

    def __init__(self, output_dir: str | Path):
        out = Path(output_dir).resolve()  # an alias (symlink) of the output shares its lock
        self.path = out.with_name(out.name + ".lock")
        self.held = False

    def acquire(self) -> OutputLock:
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder, me["host"]):
                    raise RuntimeError(
                        f"{self.path}: another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}) is writing this output; wait for it or stop it"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RuntimeError(f"{self.path}: could not take the lock")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # half-written by a process that died: stale

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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
