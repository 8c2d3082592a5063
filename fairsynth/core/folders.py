"""Replace a folder by a complete one staged beside it."""

from __future__ import annotations

import shutil
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
