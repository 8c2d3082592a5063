import io
import tarfile

import numpy as np
import pytest
import webdataset as wds

from fairsynth.data import tario


def _samples(n):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield {
            "__key__": f"s{i:04d}",
            "png": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
            "json": {"i": i, "name": "x"},
            "cls": i % 3,
        }


def test_round_trip_through_plain_webdataset(tmp_path):
    path = tmp_path / "a-000000.tar"
    assert tario.write_shard(path, _samples(10)) == 10
    expected = list(_samples(10))
    ds = wds.WebDataset(str(path), shardshuffle=False, empty_check=False).decode("rgb8")
    got = list(ds)
    assert [s["__key__"] for s in got] == [s["__key__"] for s in expected]
    for g, e in zip(got, expected, strict=True):
        assert np.array_equal(g["png"], e["png"])
        assert g["json"] == e["json"]
        assert g["cls"] == e["cls"]


def test_own_reader_round_trip(tmp_path):
    path = tmp_path / "b.tar"
    tario.write_shard(path, _samples(5))
    got = list(tario.iter_shard(path))
    assert [g["__key__"] for g in got] == [f"s{i:04d}" for i in range(5)]
    assert np.array_equal(tario.decode_png(got[2]["png"]), list(_samples(5))[2]["png"])


def test_identical_bytes_and_no_temp_left(tmp_path):
    tario.write_shard(tmp_path / "x.tar", _samples(5))
    tario.write_shard(tmp_path / "y.tar", _samples(5))
    assert (tmp_path / "x.tar").read_bytes() == (tmp_path / "y.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar", "y.tar"]


@pytest.mark.parametrize("key", ["a.b", "a/b", ""])
def test_bad_key_refused_and_nothing_left(tmp_path, key):
    with pytest.raises(ValueError, match="key"):
        tario.write_shard(tmp_path / "z.tar", [{"__key__": key, "cls": 1}])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.png", "/abs.png", "dir/x.png"])
def test_unsafe_member_name_refused(tmp_path, name):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="unsafe"):
        list(tario.iter_shard(path))
