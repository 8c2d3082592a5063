"""The downstream experiment's control (c): rejection sampling to the published dataset's
quotas, the same model, verifier and cost, guidance off; made once and kept on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fairsynth.app.config import Params, replace
from fairsynth.app.runspec import expected_fingerprint
from fairsynth.data import shards


def published_index(params: Params) -> dict:
    found = shards.latest_publication(params.output.dir)  # a regeneration keeps the old one
    if found is None:
        raise FileNotFoundError(
            f"{params.output.dir}/index.json not found: publish the balanced dataset first "
            "(dvc repro generate, or the balance flow)"
        )
    return found[0]


def build_control(params: Params, progress: bool = True) -> Path:
    """(c): rejection sampling to the published dataset's quotas, once (kept on disk)."""
    from fairsynth.app.stages.generate import stage_generate

    d = params.downstream
    published = published_index(params)
    out = Path(d.control_dir)
    control = control_params(params, published)
    done = out / "index.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == expected_fingerprint(
        control
    ):
        return out  # a complete control of these very params (ledger fingerprint) is kept
    summary = stage_generate(control, None, progress=progress)
    if summary["quotas"] != published["quotas"]:
        raise RuntimeError("the control's quotas differ from the published dataset's")
    return out


def control_params(params: Params, published: dict) -> Params:
    """The published run's params with guidance off: rejection sampling to the same quotas,
    generating at most ``control_budget`` x what the published run generated (1: the same
    cost; the rare cells then fall short, which is what the comparison is about)."""
    budget = max(1, math.ceil(params.downstream.control_budget * int(published["generated"])))
    return replace(
        params,
        guidance=replace(params.guidance, mode="none"),
        generate=replace(
            params.generate, dataset=f"{params.generate.dataset}-rejection", budget=budget
        ),
        output=replace(params.output, dir=params.downstream.control_dir),
    )
