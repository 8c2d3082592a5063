"""Content hashes of the files that decide samples (model, ADP, verifier weights).

A fingerprint keyed by file names and sizes misses retrained weights of the same shapes, so
every file is keyed by its sha256. Hashing a multi-GB model on every run would cost minutes:
each hash is cached by (resolved path, size, mtime) in ``$FAIRSYNTH_CACHE_DIR/sha256.json``
(default ``~/.cache/fairsynth``), so a file is hashed again only after it changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_MEMO: dict[str, tuple] = {}


def cache_file() -> Path:
    base = os.environ.get("FAIRSYNTH_CACHE_DIR")
    if base is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "fairsynth")
    return Path(base) / "sha256.json"


def sha256_of(path: str | Path) -> str:
    """The file's sha256 (hex), from the cache when its size and mtime are unchanged."""
    p = Path(path).resolve()
    st = p.stat()
    # ctime and inode too: `cp -p` or a tar extract can restore an mtime, not those
    key, stamp = str(p), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    hit = _MEMO.get(key) or _load_cache().get(key)
    if hit is not None and tuple(hit[:-1]) == stamp:
        _MEMO[key] = tuple(hit)
        return hit[-1]
    digest = _hash(p)
    _MEMO[key] = (*stamp, digest)
    _store(key, [*stamp, digest])
    return digest


def files_signature(path: str | Path) -> list | str:
    """``[[relative name, size, sha256], ...]`` of a file or every file of a folder; a path that
    does not exist (a hub id) is returned as it is: its name is all that is known of it."""
    p = Path(path)
    if not p.exists():
        return str(path)
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    return [
        [str(f.relative_to(p) if p.is_dir() else f.name), f.stat().st_size, sha256_of(f)]
        for f in files
    ]


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _store(key: str, value: list) -> None:
    """Best effort: an unwritable cache only costs the next run a re-hash."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _load_cache()
        cache[key] = value
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:
        pass


def local_model_path(path_or_id: str | Path) -> str | Path:
    """A hub id's snapshot folder in the local Hugging Face cache (so its files are hashed);
    a local path, or an id that is not cached, as it is."""
    if Path(path_or_id).exists():
        return path_or_id
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(str(path_or_id), local_files_only=True)
    except Exception:  # not a hub id, or not cached: the name is all there is
        return path_or_id


def code_signature() -> str:
    """One sha256 over the library's Python sources: a cache keyed on it misses after any
    change of the code that made the cached result."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
