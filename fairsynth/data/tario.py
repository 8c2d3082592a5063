"""Deterministic, atomic webdataset tar shards.

A shard is written under a temporary name and renamed when complete, so a reader never sees a
half-written shard. Every tar header is fixed (mtime, owner, mode), so the same samples give the
same bytes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

FIXED_MTIME = 1_700_000_000  # any fixed value; identical runs must give identical bytes
TMP_SUFFIX = ".tmp"
MAX_MEMBER_BYTES = 64 << 20  # a member declaring more is refused before it is read
MAX_IMAGE_PIXELS = 4096 * 4096  # an image with more is refused before it is decoded


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (h, w, 3) uint8 image, with no timestamp or other varying chunk."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes, name: str = "image") -> np.ndarray:
    """RGB uint8 pixels; an image over ``MAX_IMAGE_PIXELS`` is refused from its header, before
    the pixels are decoded (a small file can declare gigabytes of pixels)."""
    return open_image(io.BytesIO(data), name)


def open_image(source, name: str) -> np.ndarray:
    from PIL import UnidentifiedImageError

    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{name}: image of {w}x{h} pixels is over the limit of {MAX_IMAGE_PIXELS:,}"
                )
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from exc


def encode_member(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray):
        return encode_png(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return str(value).encode()
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def check_key(key: str) -> None:
    if not key or "." in key or "/" in key or "\\" in key:
        raise ValueError(f"sample key {key!r} must be non-empty and contain no '.', '/' or '\\'")


def write_shard(path: str | Path, samples: Iterable[Mapping[str, object]]) -> int:
    """Write samples (dicts with ``__key__`` and extension → value) to ``path`` atomically.

    Values: ``np.ndarray`` → PNG, ``bytes`` as is, ``str``/``int`` as text, else JSON.
    Returns the number of samples written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    count = 0
    try:
        with (
            open(tmp, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for sample in samples:
                key = str(sample["__key__"])
                check_key(key)
                for ext in sorted(k for k in sample if not k.startswith("__")):
                    data = encode_member(sample[ext])
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    info.mtime = FIXED_MTIME
                    info.mode = 0o444
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
                count += 1
            raw.flush()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def iter_shard(path: str | Path) -> Iterator[dict[str, bytes]]:
    """Yield samples of one shard as {'__key__': key, ext: bytes}, members grouped by key.

    Member names that are not plain ``key.ext`` (paths, ``..``, absolute names) are refused, and
    so is a truncated file (a member cut short, or no end-of-archive marker).
    """
    current: dict[str, bytes] | None = None
    size = os.path.getsize(path)
    with tarfile.open(path, mode="r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            name = info.name
            if "/" in name or "\\" in name or name.startswith(".") or "." not in name:
                raise ValueError(f"{path}: unsafe or malformed member name {name!r}")
            key, ext = name.split(".", 1)
            if info.size > MAX_MEMBER_BYTES:
                raise ValueError(
                    f"{path}: member {name!r} declares {info.size:,} bytes "
                    f"(limit {MAX_MEMBER_BYTES:,}); refused before reading"
                )
            fh = tar.extractfile(info)
            assert fh is not None
            data = fh.read()
            if len(data) != info.size:
                raise ValueError(f"{path}: truncated tar (member {name!r} is cut short)")
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}  # type: ignore[dict-item]
            current[ext] = data
        if size < tar.offset + 1024:
            raise ValueError(f"{path}: truncated tar (no end-of-archive marker)")
    if current is not None:
        yield current
