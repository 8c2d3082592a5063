"""Published shards through plain webdataset and a torch DataLoader (multi-worker)."""

import numpy as np
import torch
import webdataset as wds

from fairsynth.data import tario


def test_shards_through_torch_dataloader(tmp_path):
    rng = np.random.default_rng(0)
    for s in range(2):
        tario.write_shard(
            tmp_path / f"ds-{s:06d}.tar",
            [
                {
                    "__key__": f"k{s}_{i}",
                    "png": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                    "cls": i % 4,
                    "json": {"i": i},
                }
                for i in range(6)
            ],  # fmt: skip
        )
    urls = str(tmp_path / "ds-{000000..000001}.tar")
    ds = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=wds.split_by_node)
        .decode("torchrgb")
        .to_tuple("png", "cls", "__key__")
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    keys, labels = [], []
    for images, cls, key in loader:
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
        keys += list(key)
        labels += cls.tolist()
    assert sorted(keys) == sorted(f"k{s}_{i}" for s in range(2) for i in range(6))
    assert sorted(labels) == sorted([i % 4 for i in range(6)] * 2)
