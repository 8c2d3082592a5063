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
    """Print ``fairsynth: error: ...`` to stderr; the exit code: 2 for bad input, or the
    error's own (``IncompleteDataset``: 1)."""
    print(f"fairsynth: error: {message(exc)}", file=sys.stderr)
    return getattr(exc, "exit_code", 2)


class IncompleteDataset(RuntimeError):
    """A run ended short of its quotas (its budget spent) and the params did not accept a
    partial set: what it published is incomplete, and the command fails."""

    exit_code = 1

    def __init__(self, summary: dict):
        self.summary = summary
        short = ", ".join(f"{cell} {n}" for cell, n in summary.get("shortfall", {}).items())
        reasons = ", ".join(
            f"{r} {n}" for r, n in summary.get("reasons", {}).items() if r != "accepted"
        )
        accepted, quotas = sum(summary["accepted"]), sum(summary["quotas"])
        super().__init__(
            f"the dataset is incomplete: {accepted} of {quotas} samples accepted after "
            f"{summary['generated']} generated (the budget)\n"
            f"  short by cell: {short or 'none'}\n"
            f"  rejected samples by reason: {reasons or 'none'}\n"
            "  raise generate.budget (or check the verifier and guidance), or set "
            "generate.accept_partial: true to accept a partial set"
        )

    def __reduce__(self):  # Prefect stores a failed flow's exception: it must unpickle
        return (type(self), (self.summary,))


class StageFailed(RuntimeError):
    """A pipeline stage failed: ``stage <name>: <what failed, naming the key, file or sample>``."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage, self.cause = stage, cause
        one_line = " ".join(message(cause).split())
        super().__init__(f"stage {stage}: {one_line}")

    def __reduce__(self):  # Prefect stores a failed flow's exception: it must unpickle
        return (type(self), (self.stage, self.cause))
