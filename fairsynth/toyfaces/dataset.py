"""The biased toy-faces reference dataset: webdataset shards plus a labels parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.data import tario
from fairsynth.toyfaces.render import ATTRIBUTES, render, sample_params

DEFAULT_BIAS: dict[str, tuple[float, ...]] = {
    "skin": (0.8, 0.2),
    "eyeglasses": (0.85, 0.15),
    "hair": (0.6, 0.3, 0.1),
}
LABELS_FILE = "labels.parquet"
SHARD_PATTERN = "reference-{:06d}.tar"
RENDER_CHUNK = 4096


def build_reference(
    out_dir: str | Path,
    n: int = 20_000,
    seed: int = 0,
    bias: dict[str, tuple[float, ...]] | None = None,
    shard_size: int = 5_000,
    progress: bool = False,
) -> pd.DataFrame:
    """Render ``n`` biased faces into ``out_dir`` as shards + ``labels.parquet``; return labels."""
    if n <= 0:
        raise ValueError("n must be positive")
    bias = dict(DEFAULT_BIAS if bias is None else bias)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    params = sample_params(n, rng, bias)
    keys = [f"ref{seed:04d}_{i:07d}" for i in range(n)]
    labels = pd.DataFrame({"key": keys})
    for name, classes in ATTRIBUTES.items():
        idx = getattr(params, name)
        labels[name] = pd.Categorical.from_codes(idx, categories=list(classes))
    labels["shard"] = [SHARD_PATTERN.format(i // shard_size) for i in range(n)]

    images = np.concatenate(
        [render(_slice(params, s, min(s + RENDER_CHUNK, n))) for s in range(0, n, RENDER_CHUNK)]
    )
    shard_ids = range(0, (n + shard_size - 1) // shard_size)
    if progress:
        from tqdm import tqdm

        shard_ids = tqdm(shard_ids, desc="reference shards", unit="shard")
    for s in shard_ids:
        lo, hi = s * shard_size, min((s + 1) * shard_size, n)
        tario.write_shard(
            out_dir / SHARD_PATTERN.format(s),
            (
                {
                    "__key__": keys[i],
                    "png": images[i],
                    "json": {
                        name: ATTRIBUTES[name][getattr(params, name)[i]] for name in ATTRIBUTES
                    },
                }
                for i in range(lo, hi)
            ),
        )
    labels.to_parquet(out_dir / LABELS_FILE, index=False)
    (out_dir / "bias.json").write_text(json.dumps({"n": n, "seed": seed, "bias": bias}, indent=2))
    return labels


def load_reference_images(ref_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """All images of a reference folder as (n, 32, 32, 3) uint8, in label-file order."""
    ref_dir = Path(ref_dir)
    labels = pd.read_parquet(ref_dir / LABELS_FILE)
    index = {k: i for i, k in enumerate(labels["key"])}
    images = np.zeros((len(labels), 32, 32, 3), dtype=np.uint8)
    seen = 0
    for shard in sorted(ref_dir.glob("*.tar")):
        for sample in tario.iter_shard(shard):
            i = index.get(sample["__key__"])
            if i is not None:
                images[i] = tario.decode_png(sample["png"])
                seen += 1
    if seen != len(labels):
        raise ValueError(f"{ref_dir}: labels name {len(labels)} samples, shards hold {seen}")
    return images, labels


def _slice(params, lo: int, hi: int):
    from dataclasses import fields, replace

    return replace(params, **{f.name: getattr(params, f.name)[lo:hi] for f in fields(params)})
