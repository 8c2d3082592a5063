"""Fingerprints by content: retrained weights of the same shapes are new inputs."""

import pytest
from safetensors.torch import load_file, save_file

from fairsynth.app.config import TargetConfig, replace
from fairsynth.app.stages.generate import stage_generate
from fairsynth.core import filehash
from tests.factories import Crash, tiny_params


def _bump_one_tensor(adp_dir):
    """Add 1.0 to one ADP tensor: same names, shapes and file size, other weights."""
    f = adp_dir / "adp.safetensors"
    tensors = load_file(f)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    size = f.stat().st_size
    save_file(tensors, f)
    assert f.stat().st_size == size


def test_signature_changes_with_content_of_the_same_size(tiny_world):
    _, adp = tiny_world
    before = filehash.files_signature(adp)
    _bump_one_tensor(adp)
    after = filehash.files_signature(adp)
    assert [r[:2] for r in before] == [r[:2] for r in after]  # names and sizes: equal
    assert before != after


def test_hashes_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"a" * 1000)
    first = filehash.sha256_of(f)
    filehash._MEMO.clear()  # a new process: only the cache file is left

    def no_rehash(path):
        raise AssertionError(f"{path} hashed again although unchanged")

    monkeypatch.setattr(filehash, "_hash", no_rehash)
    assert filehash.sha256_of(f) == first
    assert (tmp_path / "cache" / "sha256.json").is_file()  # FAIRSYNTH_CACHE_DIR (conftest)
    monkeypatch.undo()
    f.write_bytes(b"b" * 1000)  # same size, new mtime: hashed again
    assert filehash.sha256_of(f) != first


def test_changed_weights_after_a_crash_start_a_fresh_ledger(tmp_path, tiny_world):
    params = tiny_params(tmp_path, tiny_world, gen="{mode: standalone, n: 6, budget: 18, seed: 5}")

    def crash_after_two(state):
        if state.next_batch == 2:
            raise Crash

    with pytest.raises(Crash):
        stage_generate(params, None, progress=False, on_batch=crash_after_two)
    old_ledgers = list((tmp_path / "out.ledger").iterdir())
    assert len(old_ledgers) == 1
    _bump_one_tensor(tiny_world[1])  # the ADP retrained to the same shapes
    resumed = stage_generate(params, None, progress=False)
    assert resumed["resumed_at_batch"] == 0, "the old ADP's batches were replayed"
    # the same run from scratch with the new weights gives the same dataset
    fresh = stage_generate(params, None, progress=False, force=True)
    assert fresh["accepted"] == resumed["accepted"] and fresh["generated"] == resumed["generated"]


def test_adp_cache_key_covers_what_the_adp_depends_on_only(tmp_path, tiny_world):
    from tasks.pipeline import adp_cache_key

    params = tiny_params(tmp_path, tiny_world)
    out = str(tmp_path / "adp_out")

    def key(p, o=out):
        return adp_cache_key(None, {"params": p, "out": o})

    base = key(params)
    unrelated = replace(
        params,
        target=TargetConfig(marginals={"skin": {"light": 0.9, "dark": 0.1}}),
        generate=replace(params.generate, n=99, seed=7),
        output=replace(params.output, shard_size=5),
        guidance=replace(params.guidance, strength=50.0, mode="sample"),
    )
    assert key(unrelated) == base
    assert key(params, str(tmp_path / "elsewhere")) != base
    assert key(replace(params, adp=replace(params.adp, lr=1e-3))) != base
    assert key(replace(params, model=replace(params.model, steps=3))) != base
    assert key(replace(params, attributes={"skin": ["light", "dark"]})) != base
    model_file = next((tmp_path / "model").rglob("*.safetensors"))
    weights = load_file(model_file)
    first = sorted(weights)[0]
    weights[first] = weights[first] + 1.0
    save_file(weights, model_file)  # fine-tuned, same size
    assert key(params) != base
