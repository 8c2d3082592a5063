"""Replace a folder by a complete one staged beside it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def swap_in(staged: Path, dest: Path) -> None:
    """Put the complete folder ``staged`` (a sibling of ``dest``) at ``dest``. The old folder
    stays whole, renamed aside, until the new one is in place: a crash leaves one or the other,
    never a mix."""
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staged.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(dest: str | Path) -> Iterator[Path]:
    """A fresh folder beside ``dest`` to write its files into: swapped in at ``dest`` when the
    block ends without error (its files made readable by all: mkdtemp's 0700 and safetensors'
    0600 would hide a published model from other users), removed if it raises."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{dest.name}-new-", dir=dest.parent))
    try:
        yield fresh
        for path in (fresh, *fresh.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        swap_in(fresh, dest)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
