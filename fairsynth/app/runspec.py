"""The params resolved once into a ``RunSpec`` (``fairsynth.run.spec``): world names turned
into folders, targets built, quotas planned, the fingerprint computed. Every stage resolves
here, before anything is loaded or generated; nothing below the app layer reads the params."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fairsynth.app.config.base import as_dict, hashed
from fairsynth.app.config.model_section import ENGINE_KEYS, LATER_MODEL_KEYS
from fairsynth.app.config.params import Params
from fairsynth.app.resolve import (
    adp_folder,
    model_spec,
    prompt_spec,
    sampler_settings,
    verifier_spec,
)
from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.core.confusion import audit_matrices, cell_confusion, verified_target
from fairsynth.core.filehash import files_signature, local_model_path
from fairsynth.core.plugins import resolve
from fairsynth.core.quotas import augment_quotas, standalone_quotas
from fairsynth.diffusion.device import device_kind
from fairsynth.diffusion.spec import PromptSpec
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.run.ledger import fingerprint
from fairsynth.run.spec import Job, ProducerRecipe, RunSpec, ScaleSpec
from fairsynth.verify.kinds import verifier_folder


def guidance_hash(params: Params) -> str:
    """Recorded per sample: the guidance, model and ADP settings, without the engine's (device,
    compile; the dtype only where it is not float32, so float32 runs keep their hash)."""
    model = {k: v for k, v in as_dict(params.model).items() if k not in ENGINE_KEYS}
    for key in LATER_MODEL_KEYS:  # at their defaults they keep the hash runs had before them
        if model.get(key) is None:
            model.pop(key, None)
    if params.model.dtype != "float32":
        model["dtype"] = params.model.dtype
    if params.model.layer.startswith("down_blocks"):
        model["edits_skip"] = True  # since the hook edits a down block's skip too
    guidance = as_dict(params.guidance)
    if not guidance["protect"]:
        guidance.pop("protect")  # added later: off, it keeps the hash runs had before it
    if not guidance.get("shift"):
        guidance.pop("shift", None)  # likewise
    blob = json.dumps(
        {
            "guidance": guidance,
            "model": model,
            "adp": hashed("adp", as_dict(params.adp)),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def job_quotas(params: Params, target: Target, audit_report: dict | None) -> np.ndarray:
    """Per-cell quotas of an unconditional run: ``generate.n`` following the target, or the
    fewest samples that make reference + synthetic follow it (augment)."""
    if params.verify.correct_quotas:
        return standalone_quotas(corrected_target(params, target, audit_report), params.generate.n)
    if params.generate.mode == "standalone":
        return standalone_quotas(target.probs, params.generate.n)
    if audit_report is None:
        raise ValueError("generate.mode augment needs the reference audit (run the audit stage)")
    if audit_report["cells"] != target.space.cell_names():
        raise ValueError(
            "the audit was made for other cells than the target's; re-run the audit stage"
        )
    return augment_quotas(target.probs, np.asarray(audit_report["counts"]))


def quota_confusion(params: Params, target: Target, audit_report: dict | None) -> np.ndarray:
    """P(verified cell | true cell) of the first verifier on the labelled reference, for
    verify.correct_quotas."""
    if params.generate.mode != "standalone" or params.model.kind == "text2image":
        raise ValueError("verify.correct_quotas: only for generate.mode standalone, unconditional")
    audit = ((audit_report or {}).get("verifiers") or {}).get("first")
    matrices = audit_matrices(audit, target.space.names) if audit else None
    if matrices is None:
        raise ValueError(
            "verify.correct_quotas needs the audit stage's confusion matrices of the verifier "
            "for every target attribute: give the reference labels and verify.audit_n > 0"
        )
    try:
        return cell_confusion(matrices)
    except ValueError as exc:
        raise ValueError(f"verify.correct_quotas: {exc}") from None


def corrected_target(params: Params, target: Target, audit_report: dict | None) -> np.ndarray:
    """The verified-cell fractions whose true distribution is the target (verify.correct_quotas;
    it holds when the generated samples' truth follows the target, which guidance aims at)."""
    return verified_target(target.probs, quota_confusion(params, target, audit_report))


def build_jobs(params: Params, audit_report: dict | None) -> list[Job]:
    """One job for an unconditional model; one per prompt for text-to-image (each with its own
    target and quota total)."""
    jobs = params.jobs()
    if params.model.kind != "text2image":
        prompt, target, _ = jobs[0]
        quotas = job_quotas(params, target, audit_report)
        confusion = (
            quota_confusion(params, target, audit_report) if params.verify.correct_quotas else None
        )
        return [Job(prompt_spec(prompt), target, quotas, confusion)]
    return [Job(prompt_spec(p), t, standalone_quotas(t.probs, n)) for p, t, n in jobs]


def generation_fingerprint(params: Params, target: Target, quotas: np.ndarray) -> dict:
    """Everything that decides which samples a run generates and accepts (not the budget)."""
    v = params.verify
    return {
        "quotas": quotas.tolist(),
        "target": target.probs.round(9).tolist(),
        "cells": target.space.cell_names(),
        "guidance": guidance_hash(params),
        "model_files": files_signature(local_model_path(resolve("model", params.model.path))),
        "adp_files": files_signature(adp_folder(params))
        if params.guidance.mode != "none"
        else None,
        "verify": {
            k: x for k, x in hashed("verify", as_dict(v)).items() if k != "correct_quotas" or x
        },  # fmt: skip
        "verifier_files": _verifier_files(v.verifier),
        "second_verifier_files": _verifier_files(v.second),
        "seed": params.generate.seed,
        "dataset": params.generate.dataset,
        "min_batch": params.generate.min_batch,
        "window": params.scale.window,  # not the executor or the worker count: they change nothing
        **engine_fingerprint(params),
    }


def engine_fingerprint(params: Params) -> dict:
    """Numerics differ across devices and precisions, so a ledger resumes on the same kind
    only; a CPU float32 run records nothing here and keeps the fingerprint it had before."""
    engine = {"device": device_kind(params.model.device), "dtype": params.model.dtype}
    return {} if engine == {"device": "cpu", "dtype": "float32"} else {"engine": engine}


def weights_signature(params: Params) -> list:
    """The model, ADP and verifier files of a run, by content."""
    paths = [local_model_path(resolve("model", params.model.path)), adp_folder(params)]
    for name in (params.verify.verifier, params.verify.second):
        folder = verifier_folder(resolve("verifier", name)) if name is not None else None
        if folder is not None:
            paths.append(folder)
    return [files_signature(p) for p in paths]


def _verifier_files(name: str | None) -> str | None:
    """A verifier's weights by content (``None`` for none, or a kind without files)."""
    folder = verifier_folder(resolve("verifier", name)) if name is not None else None
    return None if folder is None else files_signature(folder)


def producer_recipe(
    params: Params,
    space: AttributeSpace,
    prompts: tuple[PromptSpec | None, ...],
    guidance: GuidanceConfig | None = None,
) -> ProducerRecipe:
    """What a process loads to produce batches; ``guidance`` replaces the params' (evaluate and
    calibrate guide in other modes and at other strengths)."""
    guidance = guidance or params.guidance.to_config()
    recipe = ProducerRecipe(
        model=model_spec(params),
        prompts=prompts,
        adp=adp_folder(params) if guidance.mode != "none" else None,
        verifier=verifier_spec(params),
        attributes=params.attribute_space(),
        space=space,
        guidance=guidance,
        sampler=sampler_settings(params),
        threads=params.scale.threads_per_worker,
    )
    key = fingerprint([json.dumps(as_dict(params), sort_keys=True, default=str),
                       repr(recipe), weights_signature(params)])  # fmt: skip
    return ProducerRecipe(**{**recipe.__dict__, "key": key})


def scale_spec(params: Params) -> ScaleSpec:
    s = params.scale
    on_cuda = device_kind(params.model.device) == "cuda"
    overlap = on_cuda if s.overlap == "auto" else s.overlap
    gpus = 0
    if s.mode == "dask" and not s.address and on_cuda:
        import torch

        gpus = torch.cuda.device_count()
    batch_resources = s.batch_resources() or ({"GPU": 1} if gpus else None)  # a GPU per batch
    return ScaleSpec(s.mode, s.address, s.n_workers, s.threads_per_worker,
                     dict(s.resources) if s.resources else None, batch_resources, s.retries,
                     overlap, gpus)  # fmt: skip


def resolve_run(params: Params, audit_report: dict | None = None) -> RunSpec:
    """The generation run these params describe (quotas from ``audit_report`` in augment mode)."""
    target = params.build_target()  # the guided attributes and the top-level target, once
    jobs = tuple(build_jobs(params, audit_report))
    fp = generation_fingerprint(params, target, np.stack([j.quotas for j in jobs]))
    gen = params.generate
    augment = gen.mode == "augment" and audit_report is not None
    return RunSpec(
        space=target.space,
        jobs=jobs,
        recipe=producer_recipe(params, target.space, tuple(j.prompt for j in jobs)),
        scale=scale_spec(params),
        output_dir=Path(params.output.dir),
        dataset=gen.dataset,
        seed=gen.seed,
        budget=gen.budget,
        batch_size=params.guidance.batch_size,
        min_batch=gen.min_batch,
        window=params.scale.window,
        shard_size=params.output.shard_size,
        model_name=str(params.model.path),
        guidance_hash=guidance_hash(params),
        fingerprint=fp,
        fingerprint_id=fingerprint(fp),
        recipe_id=fingerprint({k: v for k, v in fp.items() if k != "quotas"}),
        reference_id=audit_report.get("reference_id") if augment else None,
        reference_counts=tuple(int(c) for c in audit_report["counts"]) if augment else None,
    )


def expected_fingerprint(params: Params, audit_report: dict | None = None) -> str:
    """The fingerprint a complete run of these params records in its ``index.json``."""
    quotas = np.stack([j.quotas for j in build_jobs(params, audit_report)])
    return fingerprint(generation_fingerprint(params, params.build_target(), quotas))
