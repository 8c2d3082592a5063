"""Prefect tasks of the balancing pipeline: each wraps one stage function of fairsynth.app.stages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from fairsynth.app.config import Params
from fairsynth.app.stages.audit import stage_audit
from fairsynth.app.stages.generate import require_complete, stage_generate, with_adp
from fairsynth.app.stages.reference import stage_reference
from fairsynth.app.stages.report import stage_report
from fairsynth.app.stages.train_adp import stage_train_adp
from fairsynth.app.train_adp import adp_inputs_hash, adp_is_current
from fairsynth.data.runlog import run_record_path


@task(name="reference", retries=1)
def reference_task(params: Params) -> str:
    return stage_reference(params)


@task(name="audit")
def audit_task(params: Params, reference_path: str, out_dir: str | None = None) -> dict:
    report = stage_audit(params, out_dir)
    rows = "\n".join(
        f"| {c} | {n} | {f:.3f} | {t:.3f} |"
        for c, n, f, t in zip(
            report["cells"], report["counts"], report["fractions"], report["target"], strict=True
        )
    )
    create_markdown_artifact(
        key="reference-audit",
        markdown=f"**Reference audit** ({report['n']} samples, FD to target {report['fd']:.3f})\n\n"
        f"| cell | count | fraction | target |\n|---|---|---|---|\n{rows}\n",
    )
    return report


def adp_cache_key(context, parameters: dict) -> str:
    """What the ADP depends on (``adp_fingerprint``: model and labeller files by content, the
    ``adp`` section, attributes, recording settings, code) and where it is written; not the
    target, the quotas or anything else of the params."""
    out = str(Path(parameters["out"]).resolve())
    blob = json.dumps({"inputs": adp_inputs_hash(parameters["params"]), "out": out})
    return "train-adp-" + hashlib.sha256(blob.encode()).hexdigest()


@task(name="train-adp", cache_key_fn=adp_cache_key, persist_result=True)
def train_adp_task(params: Params, out: str) -> str:
    return stage_train_adp(params, out)


def train_adp_cached(params: Params, out: str) -> str:
    """The ADP task, from the cache where it holds; trained again when the folder it names is
    gone, incomplete, or holds an ADP made from other inputs (another run, or ``dvc repro``
    with other params, wrote it since: a cached path is only as good as what it points to)."""
    return train_adp_task.with_options(refresh_cache=not adp_is_current(params, out))(params, out)


def _progress_callback():
    """An ``on_batch`` that keeps a Prefect progress artifact at accepted / quota."""
    total = None
    artifact_id = create_progress_artifact(
        progress=0.0, key="generation-progress", description="accepted / quota"
    )

    def on_batch(state) -> None:
        nonlocal total
        total = total or max(1, int(state.quotas.sum()))
        update_progress_artifact(
            artifact_id=artifact_id, progress=100.0 * float(state.accepted.sum()) / total
        )

    return on_batch


@task(name="generate", retries=1, retry_delay_seconds=5)
def generate_task(params: Params, audit_report: dict | None, adp_path: str | None) -> dict:
    """Generation in this task's process (``scale.mode: local``)."""
    summary = stage_generate(
        with_adp(params, adp_path), audit_report, progress=True, on_batch=_progress_callback()
    )
    return require_complete(summary, params)


def generate_on_workers(params: Params, audit_report: dict | None, adp_path: str | None) -> dict:
    """Generation with batches as Prefect tasks on the flow's ``DaskTaskRunner``
    (``scale.mode: dask``). Called in the flow body: the batch tasks are its tasks."""
    from fairsynth.app.runspec import scale_spec
    from tasks.scale import PrefectDaskExecutor

    summary = stage_generate(
        with_adp(params, adp_path), audit_report, progress=True,
        on_batch=_progress_callback(), executor=PrefectDaskExecutor(scale_spec(params)),
    )  # fmt: skip
    return require_complete(summary, params)


@task(name="report")
def report_task(params: Params, audit_report: dict | None, generation: dict) -> dict:
    m = stage_report(params, audit_report)
    create_markdown_artifact(key="balance-report", markdown=_report_table(m))
    publish_artifacts(Path(params.output.report_dir))
    return m


def report_failure(failure: Exception, params_file: str, report_dir: Path) -> None:
    """The ``balance-report`` artifact of a failed run: what failed, then the last published
    report (``metrics.json``), so a scheduled failure is seen where the report is looked for."""
    metrics_file = report_dir / "metrics.json"
    try:
        last = json.loads(metrics_file.read_text())
        when = json.loads(run_record_path(report_dir).read_text()).get("finished_at", "unknown")
        body = f"Last published report ({metrics_file}, generated {when}):\n\n" + _report_table(
            last
        )
    except (OSError, ValueError, KeyError, TypeError):
        body = f"No published report yet ({metrics_file})."
    create_markdown_artifact(
        key="balance-report",
        markdown=f"**Run failed** ({params_file}): `{failure}`\n\n{body}",
        description="The last balance run failed; the last published report follows",
    )


def _report_table(m: dict) -> str:
    rows = "\n".join(
        f"| {c} | {t:.3f} | {q} | {s} |"
        for c, t, q, s in zip(
            m["cells"], m["target"], m["quotas"], m["counts_synthetic"], strict=True
        )
    )
    fd_before = "n/a" if m.get("fd_before") is None else f"{m['fd_before']:.4f}"
    return (
        f"**Balanced dataset**: FD before {fd_before}, after {m['fd_after']:.4f}; "
        f"{m['samples_per_accepted']:.2f} samples generated per accepted.\n\n"
        f"| cell | target | quota | accepted |\n|---|---|---|---|\n{rows}\n"
    )


def publish_artifacts(report_dir: Path) -> None:
    """The report page's path (a link) and the dataset card (its body) as flow artifacts."""
    page = (report_dir / "report.html").resolve()
    create_link_artifact(
        key="balance-report-page", link=page.as_uri(), link_text=str(report_dir / "report.html"),
        description="The fairness report page (self-contained HTML)",
    )  # fmt: skip
    card = (report_dir / "README.md").read_text()
    body = card.split("\n---\n", 1)[1] if card.startswith("---\n") else card
    create_markdown_artifact(key="balance-dataset-card", markdown=body,
                             description=f"Dataset card ({report_dir / 'README.md'})")  # fmt: skip
