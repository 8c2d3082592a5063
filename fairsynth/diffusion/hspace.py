"""h-space access: capture (and optionally replace) the output of a UNet layer with a forward hook.

The default layer is ``mid_block``, the bottleneck of diffusers' ``UNet2DModel`` and
``UNet2DConditionModel``; for a transformer (SD3, Flux), which has none, ``mid_block`` names its
middle joint block, ``transformer_blocks.<n // 2>``. Returning a tensor from the hook replaces h
for the rest of the network, so the network itself is never forked.

A joint transformer block returns ``(text stream, image stream)``: h is the image stream, a
token sequence (n, tokens, dim) in the latent grid's row-major order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HEdit = Callable[[torch.Tensor], torch.Tensor]


# blocks whose output is (encoder_hidden_states, hidden_states): h is the second, the image
STREAM_BLOCKS = ("JointTransformerBlock", "FluxTransformerBlock", "FluxSingleTransformerBlock")


def layer_path(model: nn.Module, layer: str) -> str:
    """``layer`` with ``mid_block`` resolved to a transformer's middle joint block."""
    blocks = getattr(model, "transformer_blocks", None)
    if layer == "mid_block" and not hasattr(model, "mid_block") and blocks is not None:
        return f"transformer_blocks.{len(blocks) // 2}"
    return layer


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """``'mid_block'`` or a dotted path such as ``'up_blocks.0'`` -> the module."""
    layer = layer_path(model, layer)
    module: nn.Module = model
    for part in layer.split("."):
        if part.isdigit() and isinstance(module, nn.ModuleList | nn.Sequential):
            module = module[int(part)]
        elif hasattr(module, part) and isinstance(getattr(module, part), nn.Module):
            module = getattr(module, part)
        else:
            raise ValueError(f"the model has no layer {layer!r} (failed at {part!r})")
    return module


def _replace_skip(item, old: torch.Tensor, new: torch.Tensor):
    """A down block returns (h, skips) where the last skip *is* h: edit both, so the decoder
    sees the nudged h through the skip connection as well as through the bottleneck."""
    if isinstance(item, tuple) and item and item[-1] is old:
        return (*item[:-1], new)
    return item


class HSpace:
    """Hook on one layer. ``captured`` holds the last h seen (after any edit); ``edit``, when
    set, maps h to its replacement. Use as a context manager, or call ``remove()``."""

    def __init__(self, model: nn.Module, layer: str = "mid_block"):
        self.layer = layer
        self.module = resolve_layer(model, layer)
        self.index = 1 if type(self.module).__name__ in STREAM_BLOCKS else 0
        self.edit: HEdit | None = None
        self.captured: torch.Tensor | None = None
        self.keep = True
        self._handle = self.module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output):
        h = output[self.index] if isinstance(output, tuple) else output
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"layer {self.layer!r} does not output a tensor")
        if self.edit is not None:
            h = self.edit(h)
        if self.keep:
            self.captured = h
        if self.edit is None:
            return None
        if not isinstance(output, tuple):
            return h
        if self.index:
            return (*output[: self.index], h, *output[self.index + 1 :])
        return (h, *(_replace_skip(o, output[0], h) for o in output[1:]))

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> HSpace:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
