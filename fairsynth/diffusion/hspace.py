"""h-space access: capture (and optionally replace) the output of a UNet layer with a forward hook.

The default layer is ``mid_block``, the bottleneck of diffusers' ``UNet2DModel`` and
``UNet2DConditionModel``. Returning a tensor from the hook replaces h for the decoder, so the
UNet itself is never forked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HEdit = Callable[[torch.Tensor], torch.Tensor]


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """``'mid_block'`` or a dotted path such as ``'up_blocks.0'`` -> the module."""
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
        self.edit: HEdit | None = None
        self.captured: torch.Tensor | None = None
        self.keep = True
        self._handle = self.module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output):
        h = output[0] if isinstance(output, tuple) else output
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
        return (h, *(_replace_skip(o, output[0], h) for o in output[1:]))

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> HSpace:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
