import numpy as np
import pandas as pd
import webdataset as wds

from fairsynth.toyfaces.dataset import build_reference, load_reference_images
from fairsynth.toyfaces.render import render_batch


def test_reference_shards_labels_and_plain_webdataset(tmp_path):
    labels = build_reference(tmp_path, n=300, seed=5, shard_size=128)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        "reference-000000.tar",
        "reference-000001.tar",
        "reference-000002.tar",
    ]
    on_disk = pd.read_parquet(tmp_path / "labels.parquet")
    assert len(on_disk) == 300 and list(on_disk["key"]) == list(labels["key"])
    ds = wds.WebDataset(
        str(tmp_path / "reference-{000000..000002}.tar"), shardshuffle=False, empty_check=False
    ).decode("rgb8")
    seen = {s["__key__"]: s for s in ds}
    assert len(seen) == 300
    row = on_disk.iloc[17]
    sample = seen[row["key"]]
    assert sample["json"]["skin"] == row["skin"] and sample["json"]["hair"] == row["hair"]
    images, labels2 = load_reference_images(tmp_path)
    assert images.shape == (300, 32, 32, 3)
    assert np.array_equal(images[17], sample["png"])


def test_reference_is_deterministic(tmp_path):
    build_reference(tmp_path / "a", n=50, seed=1)
    build_reference(tmp_path / "b", n=50, seed=1)
    a = (tmp_path / "a" / "reference-000000.tar").read_bytes()
    b = (tmp_path / "b" / "reference-000000.tar").read_bytes()
    assert a == b


def test_default_bias(tmp_path):
    labels = build_reference(tmp_path, n=4000, seed=0)
    assert abs((labels["skin"] == "dark").mean() - 0.20) < 0.03
    assert abs((labels["eyeglasses"] == "yes").mean() - 0.15) < 0.03
    assert abs((labels["hair"] == "blond").mean() - 0.10) < 0.03
    # images are the renderer's own
    imgs, _ = render_batch(1, seed=0)
    assert imgs.dtype == np.uint8
