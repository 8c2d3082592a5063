"""Resumable training state shared by the toy trainers: safetensors files swapped in
atomically, and AdamW moments saved and restored by parameter position."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from fairsynth.core.folders import swap_in


def save_state(state_dir: Path, tensors: dict[str, dict[str, torch.Tensor]], meta: dict) -> None:
    """Write ``<name>.safetensors`` files and meta.json to a temp folder, then swap it in."""
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, sd in tensors.items():
        save_file({k: v.detach().contiguous() for k, v in sd.items()}, tmp / f"{name}.safetensors")
    (tmp / "meta.json").write_text(json.dumps(meta))
    swap_in(tmp, state_dir)


def optimizer_moments(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    moments = {}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        st = opt.state.get(p)
        if st:
            moments[f"{i}.exp_avg"] = st["exp_avg"]
            moments[f"{i}.exp_avg_sq"] = st["exp_avg_sq"]
    return moments


def load_optimizer(opt: torch.optim.Optimizer, moments: dict[str, torch.Tensor], step: int) -> None:
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        if f"{i}.exp_avg" in moments:
            opt.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": moments[f"{i}.exp_avg"],
                "exp_avg_sq": moments[f"{i}.exp_avg_sq"],
            }
