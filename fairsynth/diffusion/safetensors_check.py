"""A cheap look at a safetensors file before a loader does: the header parses and every tensor
lies inside the file. A corrupt or truncated file is then a ValueError naming it, where the
loaders raise errors that name no file (transformers) or no reason (diffusers)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def check_safetensors(path: str | Path) -> None:
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file ({size} bytes)")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER, size - 8):
            raise ValueError(f"{path}: not a safetensors file (its header claims {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (unreadable header)")
    data = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"{path}: tensor {name!r} has no valid data offsets")
        if offsets[1] > data:
            raise ValueError(f"{path}: truncated (tensor {name!r} ends past the end of the file)")


def check_folder(folder: str | Path, files: tuple[str, ...]) -> None:
    """Every ``.safetensors`` file of ``files`` under ``folder`` that exists."""
    for f in files:
        p = Path(folder) / f
        if f.endswith(".safetensors") and p.is_file():
            check_safetensors(p)
