"""Which weight files a configuration needs, where they are expected, and whether they are there.

``fairsynth weights check`` prints this; generation runs it first and stops with the list when
anything is missing, before loading or generating anything. Nothing here downloads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fairsynth.app.config import Params
from fairsynth.core.plugins import resolve
from fairsynth.guidance.adp import ADP_FILES
from fairsynth.run.spec import RunSpec
from fairsynth.verify.kinds import kind_of, settings_for, verifier_folder

MODEL_FILES = (
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
)


def _folder_rows(what: str, folder: Path, files: tuple[str, ...]) -> list[dict]:
    return [
        {"what": what, "file": f, "path": str(folder / f), "present": (folder / f).is_file()}
        for f in files
    ]


def _hub_rows(what: str, repo_id: str, files: tuple[str, ...]) -> list[dict]:
    """Files of a hub model in the local Hugging Face cache (never fetched)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    rows = []
    for f in files:
        hit = try_to_load_from_cache(repo_id, f)
        present = isinstance(hit, str)
        where = hit if present else f"{HF_HUB_CACHE} ({repo_id}/{f})"
        rows.append({"what": what, "file": f, "path": where, "present": present})
    return rows


def model_rows(path_or_id: str, kind: str = "unconditional") -> list[dict]:
    resolved = resolve("model", path_or_id)
    p = Path(resolved)
    text = str(resolved)
    local = p.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1
    files = MODEL_FILES
    what = f"diffusion model {path_or_id}"
    if kind == "text2image":
        family = _family(p if local else None, text)
        files = (*family.files, *(f"{t}/tokenizer_config.json" for t in family.tokenizers))
        what = f"{what} ({family.pipeline})"
    if local:
        return _folder_rows(what, p, files)
    return _hub_rows(f"{what} (hub cache)", text, files)


def _family(folder: Path | None, repo_id: str):
    """The pipeline family a folder's (or a cached hub model's) model_index.json names; SD 1.x
    where there is none yet (its files are then listed as missing)."""
    import json

    from fairsynth.diffusion.families import FAMILIES, family_of

    index = None
    if folder is not None:
        index = folder / "model_index.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "model_index.json")
        index = Path(hit) if isinstance(hit, str) else None
    try:
        name = json.loads(index.read_text())["_class_name"] if index else None
    except (OSError, ValueError, KeyError):
        name = None
    return family_of(name) if name else FAMILIES["StableDiffusionPipeline"]


def check_weights(params: Params, adp_made_by_pipeline: bool = False) -> list[dict]:
    """One row per needed file: what, file, path, present."""
    rows = model_rows(params.model.path, params.model.kind)
    if params.guidance.mode != "none" and not adp_made_by_pipeline:
        adp = Path(resolve("adp", params.adp.path))
        rows += _folder_rows(f"ADP {params.adp.path}", adp, ADP_FILES)
    for name in (params.verify.verifier, params.verify.second):
        if name is not None:
            rows += _verifier_rows(name, params)
    return rows


def _verifier_rows(name: str, params: Params) -> list[dict]:
    """The files of a verifier, by its kind; rows its kind may fetch at run time (when its
    settings allow) are marked ``may_download``."""
    kind = kind_of(name)
    settings = settings_for(kind, params.verify)
    rows = kind.required(resolve("verifier", name), settings, name)
    if kind.may_download(settings):
        rows = [{**r, "may_download": True} for r in rows]
    return rows


class MissingFiles(FileNotFoundError):
    def __init__(self, missing: list[dict]):
        lines = "\n".join(f"  - {r['what']}: {r['path']}" for r in missing)
        super().__init__(
            f"missing files, nothing was generated:\n{lines}\n"
            "(`fairsynth weights check` lists what the params need; nothing is downloaded at run "
            "time unless model.local_files_only is false or verify.deepface.allow_download is true)"
        )
        self.missing = missing


def require_weights(params: Params, adp_made_by_pipeline: bool = False) -> None:
    missing = [r for r in check_weights(params, adp_made_by_pipeline) if not r["present"]]
    if params.model.local_files_only is False:
        missing = [r for r in missing if "hub cache" not in r["what"]]
    missing = [r for r in missing if not r.get("may_download")]
    if missing:
        raise MissingFiles(missing)


def check_inputs(run: RunSpec) -> None:
    """What the model, ADP and verifier folders say about themselves, checked against the
    resolved run before anything is loaded: class names (matched by name, any order) and the
    step count the scheduler allows. A ValueError names the key and both sides."""
    import json

    recipe = run.recipe
    sources = []
    if recipe.adp is not None:
        sources.append(("ADP", Path(recipe.adp) / "adp.json"))
    for folder in (recipe.verifier.first, recipe.verifier.second):
        if verifier_folder(folder) is not None:
            sources.append((f"verifier {folder}", Path(folder) / "config.json"))
    for what, file in sources:
        if file.is_file():
            recipe.attributes.order_from(json.loads(file.read_text()).get("attributes", {}), what)
    scheduler = Path(recipe.model.path) / "scheduler" / "scheduler_config.json"
    steps = recipe.sampler.steps
    if scheduler.is_file():
        config = json.loads(scheduler.read_text())
        _check_scheduler(recipe.sampler, config, scheduler)
        trained = int(config.get("num_train_timesteps", 1000))
        if steps > trained:
            raise ValueError(
                f"model.steps: {steps} is more than the scheduler's "
                f"{trained} training timesteps ({scheduler})"
            )


def _check_scheduler(settings, config: dict, where: Path) -> None:
    """The configured scheduler builds on the folder's config (its kind fits the model's, its
    options exist): a ValueError naming model.scheduler and the folder."""
    from fairsynth.diffusion.schedulers import make_scheduler

    flow = "FlowMatch" in str(config.get("_class_name", ""))
    try:
        make_scheduler(settings.scheduler, config, dict(settings.scheduler_options), flow)
    except ValueError as exc:
        raise ValueError(f"model.scheduler: {exc} ({where})") from None


def format_rows(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        mark = "ok     " if r["present"] else "MISSING"
        lines.append(f"{mark}  {r['what']}: {r['path']}")
    return "\n".join(lines)


def weights_check_command(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params

    rows = check_weights(load_params(a.params))
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_rows(rows))
    missing = sum(not r["present"] for r in rows)
    if missing and not a.json:
        print(f"{missing} file(s) missing: runs with these params stop before generating")
    return 1 if missing else 0


def check_command(a) -> int:
    """``fairsynth check``: the params, the files every component needs, and whether the
    classifiers take the model's images; one line on the first problem, before any work."""
    from fairsynth.app.config import load_params
    from fairsynth.app.preflight import check_images, check_prompts

    params = load_params(a.params)
    require_weights(params)
    check_images(params, ("verifier", "second", "pseudo_labeller"))
    check_prompts(params)
    print(f"{a.params}: ready (params valid, files present, classifiers take the model's images)")
    return 0
