"""``torch.compile`` of a UNet around its hooked layer.

The h-space hook must run eagerly: its edit changes every batch (a new guidance object), which a
compiled graph would guard on and recompile for. So every block is compiled except the hooked
layer and the modules on the path to it; the hooked layer's own children are compiled, and the
hook on its output stays outside any graph.
"""

from __future__ import annotations

from torch import nn

from fairsynth.diffusion.hspace import layer_path, resolve_layer


def compile_around(unet: nn.Module, layer: str, **options) -> list[str]:
    """Compile (in place, ``nn.Module.compile``) every child of ``unet`` off the path to
    ``layer`` and the children of ``layer``. Returns the compiled modules' names."""
    layer = layer_path(unet, layer)
    target = resolve_layer(unet, layer)
    path = {id(unet)}
    module = unet
    for part in layer.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
        path.add(id(module))
    compiled: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if id(child) in path and child is not target:
                visit(child, f"{full}.")
            elif child is target or isinstance(child, nn.ModuleList | nn.ModuleDict):
                visit(child, f"{full}.")
            elif any(p.numel() for p in child.parameters()):
                child.compile(**options)
                compiled.append(full)

    visit(unet, "")
    return compiled


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None
