"""A preflight, in milliseconds, before any model is loaded: will the classifiers be able to
judge what the model makes? Read from the folders' own configs, not by running anything."""

from __future__ import annotations

import json
from pathlib import Path

from fairsynth.app.config import Params
from fairsynth.core.plugins import resolve
from fairsynth.verify.kinds import kind_of

EXTRA_CONFIG = "fairsynth.json"  # (fairsynth.diffusion.unconditional: pixel_unshuffle)


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
