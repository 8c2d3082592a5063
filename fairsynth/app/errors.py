"""What a command does with an error on bad input or a faulty machine: one message naming the
key, file or sample, exit code 2, never a traceback."""

from __future__ import annotations

import sys
import tarfile

# ValueError covers ConfigError; OSError covers a full or read-only disk, FileExistsError,
# PermissionError and unreadable files
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    EOFError,
    tarfile.TarError,
    OverflowError,
    RuntimeError,
    KeyError,
    MemoryError,
)


def message(exc: BaseException, limit: int = 2000) -> str:
    text = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
    text = text or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report(exc: BaseException) -> int:
    """Print ``fairsynth: error: ...`` to stderr; the exit code for bad input (2)."""
    print(f"fairsynth: error: {message(exc)}", file=sys.stderr)
    return 2


class StageFailed(RuntimeError):
    """A pipeline stage failed: ``stage <name>: <what failed, naming the key, file or sample>``."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage, self.cause = stage, cause
        one_line = " ".join(message(cause).split())
        super().__init__(f"stage {stage}: {one_line}")

    def __reduce__(self):  # Prefect stores a failed flow's exception: it must unpickle
        return (type(self), (self.stage, self.cause))
