"""Prefect tasks of the toy-faces world: each wraps one library function."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from fairsynth.app.config import AuditModelConfig, ReferenceConfig
from fairsynth.toyfaces.audit_model import Sampling, audit_model, format_report, save_report
from fairsynth.toyfaces.dataset import build_reference


@task(name="build-reference", retries=1)
def build_reference_task(cfg: ReferenceConfig) -> str:
    """Render the biased reference dataset; returns its folder (paths cross task boundaries)."""
    build_reference(cfg.path, n=cfg.n, seed=cfg.seed)
    return cfg.path


@task(name="audit-model")
def audit_model_task(cfg: AuditModelConfig, reference: str, out_dir: str = "data/audit") -> dict:
    """Sample the toy DDPM, judge with the verifier; writes JSON + grid, publishes a summary."""
    out = Path(out_dir)
    how = Sampling(cfg.n, cfg.seed, cfg.steps, cfg.batch_size, cfg.eta)
    report = audit_model(how, reference=reference, grid_path=out / "model_samples.png")
    save_report(report, out / "model_audit.json")
    create_markdown_artifact(
        key="toyfaces-model-audit",
        markdown="```\n" + format_report(report) + "\n```",
        description="Unguided toy DDPM samples vs the reference bias",
    )
    return {
        "max_abs_diff": report["max_abs_diff"],
        "confident_fraction": report["confident_fraction"],
    }
