"""A preflight, in milliseconds, before any model is loaded: will the classifiers be able to
judge what the model makes? Read from the folders' own configs, not by running anything."""

from __future__ import annotations

import json
from pathlib import Path

from fairsynth.app.config import Params
from fairsynth.core.plugins import resolve
from fairsynth.diffusion.spec import EXTRA_CONFIG
from fairsynth.verify.kinds import kind_of


def model_images(params: Params) -> tuple[int, int] | None:
    """(side, channels) of the images an unconditional model folder makes, from its
    ``unet/config.json`` and ``fairsynth.json``; None when that cannot be read without loading
    it (a hub id, a text-to-image pipeline, a non-square size)."""
    folder = Path(resolve("model", params.model.path))
    config_file = folder / "unet" / "config.json"
    if params.model.kind != "unconditional" or not config_file.is_file():
        return None
    try:
        unet = json.loads(config_file.read_text())
        extra_file = folder / EXTRA_CONFIG
        extra = json.loads(extra_file.read_text()) if extra_file.is_file() else {}
        side, factor = unet["sample_size"], int(extra.get("pixel_unshuffle", 1))
        if isinstance(side, list):
            if len(set(side)) != 1:
                return None
            side = side[0]
        return int(side) * factor, int(unet["in_channels"]) // factor**2
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: loading the model names the problem


def check_images(params: Params, roles: tuple[str, ...] = ("verifier", "second")) -> None:
    """Stop when the model's images are not what a classifier of ``roles`` takes (every
    sample would be rejected as ``bad_image``), naming both sides."""
    made = model_images(params)
    if made is None:
        return
    side, channels = made
    values = {"verifier": ("verify.verifier", params.verify.verifier),
              "second": ("verify.second", params.verify.second),
              "pseudo_labeller": ("adp.pseudo_labeller", params.adp.pseudo_labeller)}  # fmt: skip
    model = f"model.path: {params.model.path} makes {side}x{side} images with {channels} channels"
    if channels != 3:
        raise ValueError(
            f"{model}; the classifiers take RGB (3 channels). A folder written by fairsynth "
            f"keeps its pixel_unshuffle factor in {EXTRA_CONFIG}: is that file missing?"
        )
    for role in roles:
        key, value = values[role]
        if value is None:
            continue
        size = kind_of(value).input_size(resolve(role if role != "second" else "verifier", value))
        if size is not None and size != side:
            raise ValueError(
                f"{model}; {key} {value} takes {size}x{size}: it would reject every sample "
                "(bad_image). Use a classifier of the model's image size"
            )


def check_prompts(params: Params) -> None:
    """Text-to-image: a prompt longer than a text encoder reads stops the run (the rest would
    be dropped without a word); a prompt the ADP was not recorded on is said (its h may lie
    where the ADP has not learnt to read it)."""
    m = params.model
    if m.kind != "text2image" or not m.prompts:
        return
    folder = Path(resolve("model", m.path))
    texts = [(f"model.prompts[{i}].{key}", getattr(p, key))
             for i, p in enumerate(m.prompts) for key in ("prompt", "negative_prompt")
             if getattr(p, key)]  # fmt: skip
    texts += [
        (f"adp.neutral_prompts[{i}]", t) for i, t in enumerate(params.adp.neutral_prompts or [])
    ]
    for tokenizer_dir in sorted(p for p in folder.glob("tokenizer*") if p.is_dir()):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        limit = int(tokenizer.model_max_length)
        if limit > 100_000:  # transformers' "no limit" sentinel
            continue
        for key, text in texts:
            ids = tokenizer(text).input_ids
            if len(ids) > limit:
                dropped = tokenizer.decode(ids[limit - 1 :], skip_special_tokens=True)
                raise ValueError(
                    f"{key}: {len(ids)} tokens, but the text encoder ({tokenizer_dir.name}) reads "
                    f"{limit}: {dropped.strip()!r} would be dropped without a word; shorten it"
                )
    _say_unrecorded_prompts(params)


def _say_unrecorded_prompts(params: Params) -> None:
    import sys

    if params.guidance.mode == "none":
        return
    adp_json = Path(resolve("adp", params.adp.path)) / "adp.json"
    try:
        recorded = json.loads(adp_json.read_text()).get("prompts")
    except (OSError, ValueError):
        return  # an ADP the run makes, or one weights check reports
    if not recorded:
        return
    for i, p in enumerate(params.model.prompts or []):
        if p.prompt not in recorded:
            print(
                f"fairsynth: note: model.prompts[{i}] {p.prompt!r} is not among the prompts the "
                f"ADP was recorded on ({recorded}); guidance reads its h all the same",
                file=sys.stderr,
            )
