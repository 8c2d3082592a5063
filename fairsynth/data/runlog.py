"""Run facts (wall time, resume point, workers, crashes) kept beside an output, never inside it.

An output's bytes depend only on its inputs, so a Prefect flow run and ``dvc repro`` that made
the same output leave the same files and neither sees the other's work as a change. What
differs between runs of the same inputs is written to ``<output>.run.json`` next to it.
"""

from __future__ import annotations

import time
from pathlib import Path

# summary keys that describe a run, not the data it made
RUN_FACTS = (
    "wall_seconds",
    "generation_seconds",
    "resumed_at_batch",
    "verifier_crashes",
    "seconds",
    "seconds_per_batch",
    "threads",
)


def run_record_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".run.json")


def split_run_facts(summary: dict, extra: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(what the output records, what only this run knows)."""
    keys = set(RUN_FACTS) | set(extra)
    stable = {k: v for k, v in summary.items() if k not in keys}
    facts = {k: v for k, v in summary.items() if k in keys}
    return stable, facts


def write_run_record(output: str | Path, facts: dict) -> Path:
    from fairsynth.data.shards import write_json

    path = run_record_path(output)
    write_json(path, {**facts, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path


def read_run_record(output: str | Path) -> dict:
    import json

    path = run_record_path(output)
    return json.loads(path.read_text()) if path.is_file() else {}
