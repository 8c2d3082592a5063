"""Hostile inputs and faults: each was a silent wrong result, lost data, a memory bomb or a
traceback; now each is refused (nothing written, no input modified) or survived."""

import io
import json
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairsynth.app.config import ConfigError, load_params, replace
from fairsynth.app.stages.__main__ import main as pipeline_main
from fairsynth.app.stages.generate import stage_generate
from fairsynth.core.attributes import AttributeSpace
from fairsynth.data import tario
from fairsynth.data.reference import read_image_folder, read_shards
from fairsynth.toyfaces import VERIFIER_DIR
from fairsynth.toyfaces.dataset import build_reference
from fairsynth.toyfaces.render import ATTRIBUTES, render_batch
from fairsynth.verify import ClassifierVerifier, load_verifier
from fairsynth.verify.classifier import AttributeClassifier
from tests.factories import Crash, labelled_folder, tiny_params

SPACE = AttributeSpace.from_dict(ATTRIBUTES)


def _params(tmp_path, text: str):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# 1. class order and names -------------------------------------------------------------------


def test_reordered_classes_keep_their_meaning(tmp_path):
    images, labels = render_batch(64, seed=11)
    reversed_space = AttributeSpace.from_dict({"skin": ["dark", "light"], **{
        k: v for k, v in ATTRIBUTES.items() if k != "skin"}})  # fmt: skip
    from fairsynth.app.config import parse_params
    from fairsynth.app.resolve import verifier_spec

    aligned = load_verifier(verifier_spec(parse_params({})), reversed_space)
    plain = ClassifierVerifier(AttributeClassifier.load(VERIFIER_DIR))
    got = aligned.verify(images).probs["skin"].argmax(1)  # index into [dark, light]
    own = plain.verify(images).probs["skin"].argmax(1)  # index into [light, dark]
    names_aligned = np.array(["dark", "light"])[got]
    names_own = np.array(ATTRIBUTES["skin"])[own]
    truth = np.array(ATTRIBUTES["skin"])[labels["skin"]]
    assert (names_own == truth).all()  # the verifier is right on clean renders ...
    assert (names_aligned == truth).all()  # ... and stays right under the reversed order
    assert set(truth) == {"light", "dark"}


def test_adp_heads_follow_the_params_class_order(tiny_world):
    from fairsynth.guidance.adp import TrainedADP

    adp = TrainedADP.load(tiny_world[1])
    reordered = AttributeSpace.from_dict(
        {"hair": ["blond", "black", "brown"], "skin": ["dark", "light"]}
    )
    aligned = adp.aligned(reordered)
    h, t = torch.randn(5, 16, 8, 8), torch.full((5,), 500)
    p = adp.joint_probs(h, t, ("skin",)).numpy()
    q = aligned.joint_probs(h, t, ("skin",)).numpy()
    assert np.allclose(q, p[:, ::-1])
    hp = adp.joint_probs(h, t, ("hair",)).numpy()
    assert np.allclose(aligned.joint_probs(h, t, ("hair",)).numpy(), hp[:, [2, 0, 1]])
    assert aligned.space.classes("skin") == ("dark", "light")


def test_published_classes_are_what_the_verifier_sees(tmp_path, tiny_world):
    """End to end with ``skin: [dark, light]``: every published sample's ``skin`` is the class
    the verifier (in its own order) gives its image."""
    params = tiny_params(
        tmp_path, tiny_world, mode="none", gen="{mode: standalone, n: 8, budget: 24, seed: 1}"
    )
    text = (tmp_path / "params.yaml").read_text()
    text += (
        "attributes: {skin: [dark, light], eyeglasses: [no, yes], hair: [black, brown, blond]}\n"
    )
    text = text.replace("{skin: {light: 0.5, dark: 0.5}}", "{skin: {dark: 0.5, light: 0.5}}")
    (tmp_path / "params.yaml").write_text(text)
    params = load_params(tmp_path / "params.yaml")
    stage_generate(params, None, progress=False)
    plain = ClassifierVerifier(AttributeClassifier.load(VERIFIER_DIR))
    samples = [
        s for shard in sorted((tmp_path / "out").glob("*.tar")) for s in tario.iter_shard(shard)
    ]
    assert samples
    images = np.stack([tario.decode_png(s["png"]) for s in samples])
    own = np.array(ATTRIBUTES["skin"])[plain.verify(images).probs["skin"].argmax(1)]
    published = [json.loads(s["json"])["skin"] for s in samples]
    assert list(own) == published


def test_renamed_classes_are_refused_naming_both_lists(tmp_path, tiny_world):
    tiny_params(tmp_path, tiny_world)
    text = (tmp_path / "params.yaml").read_text()
    text += "attributes: {skin: [pale, tan]}\n"
    text = text.replace("{skin: {light: 0.5, dark: 0.5}}", "{skin: {pale: 0.5, tan: 0.5}}")
    (tmp_path / "params.yaml").write_text(text)
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(ValueError, match=r"\['pale', 'tan'\].*\['light', 'dark'\]"):
        stage_generate(params, None, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.ledger").exists()


def test_cell_separator_in_class_names_is_refused(tmp_path):
    p = _params(tmp_path, "attributes: {a: ['x|y', x], b: [z, 'y|z']}\n")
    with pytest.raises(ConfigError, match=r"attributes: .*'x\|y'"):
        load_params(p)


# 2, 3. outputs that overlap inputs; aliases of the output --------------------------------------


@pytest.mark.parametrize("where", ["ref", "ref/synthetic", "."])
def test_output_overlapping_an_input_is_refused(tmp_path, where):
    build_reference(tmp_path / "ref", n=8, seed=0)
    before = _snapshot(tmp_path / "ref")
    out = tmp_path / where
    p = _params(tmp_path, f"reference: {{path: {tmp_path / 'ref'}}}\noutput: {{dir: {out}}}\n")
    with pytest.raises(ConfigError, match="output.dir: .* overlaps reference.path"):
        load_params(p)
    assert _snapshot(tmp_path / "ref") == before


def test_the_lock_holds_through_an_alias_of_the_output(tmp_path, tiny_world):
    params = tiny_params(tmp_path, tiny_world, mode="none")
    (tmp_path / "out").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "out")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "out.lock").write_text(
            json.dumps({"pid": live.pid, "host": socket.gethostname()})
        )

        aliased = replace(params, output=replace(params.output, dir=str(tmp_path / "alias")))
        with pytest.raises(RuntimeError, match=f"pid {live.pid}"):
            stage_generate(aliased, None, progress=False)
        assert not list((tmp_path / "out").iterdir())
    finally:
        live.kill()
        live.wait()


# 5. labels not matched to the data -------------------------------------------------------------


def _folder(tmp_path, n=4):
    return labelled_folder(tmp_path, n)[2]


def test_repeated_label_rows_are_refused(tmp_path):
    frame = _folder(tmp_path)
    pd.concat([frame, frame.iloc[:2]]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels.csv: 2 file\(s\) labelled more than once"):
        read_image_folder(tmp_path, SPACE, tmp_path / "labels.csv")


def test_unlabelled_images_are_counted(tmp_path):
    frame = _folder(tmp_path, 5)
    frame.iloc[:3].to_csv(tmp_path / "labels.csv", index=False)
    data = read_image_folder(tmp_path, SPACE, tmp_path / "labels.csv")
    assert len(data.keys) == 3 and data.unlabelled == 2


def test_shard_labels_that_match_no_sample_are_refused(tmp_path):
    build_reference(tmp_path / "ref", n=8, seed=1)
    labels = pd.read_parquet(tmp_path / "ref" / "labels.parquet")
    labels.assign(key=labels["key"] + "x").to_parquet(tmp_path / "ref" / "labels.parquet")
    with pytest.raises(ValueError, match=r"labels.parquet: 8 labelled key\(s\) are not in"):
        read_shards(tmp_path / "ref", SPACE)


# 6, 7, 8. numbers, repeated keys, alias bombs -------------------------------------------------


@pytest.mark.parametrize(
    "text, match",
    [
        ("guidance: {temperature: .inf}\n", "guidance.temperature: must be a finite number"),
        ("guidance: {strength: .nan}\n", "guidance.strength: must be a finite number"),
        ("target: {marginals: {skin: {light: .nan, dark: 0.5}}}\n", "target.marginals.skin.light"),
        ("generate: {n: 100000000000000000000}\n", "generate.n: .* out of range"),
        ("generate: {n: 16, n: 4000}\n", r"duplicate key 'n' \(lines 1 and 1\)"),
        (
            "generate: {n: 16}\nseed: 1\ngenerate: {n: 4000}\n",
            r"duplicate key 'generate' \(lines 1 and 3\)",
        ),
    ],
)
def test_bad_numbers_and_repeated_keys_are_refused(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_params(_params(tmp_path, text))


def test_merge_keys_still_work_and_may_override():
    from fairsynth.app.config import yaml_load

    doc = yaml_load("a: &b {x: 1, y: 1}\nc: {<<: *b, y: 2}\n")
    assert doc["c"] == {"x": 1, "y": 2}
    with pytest.raises(ConfigError, match="a mapping key must be a plain value"):
        yaml_load("? [1, 2]\n: x\n")


def test_a_huge_integer_where_a_number_is_read_names_the_key():
    from fairsynth.app.config import parse_params

    with pytest.raises(ConfigError, match="guidance.strength: must be a finite number"):
        parse_params({"guidance": {"strength": 10**400}})


def test_an_alias_bomb_is_refused_fast_and_briefly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("seed: [" + ", ".join(["*a8"] * 9) + "]")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias") as err:
        load_params(_params(tmp_path, "\n".join(lines) + "\n"))
    assert time.perf_counter() - t0 < 5 and len(str(err.value)) < 500


def test_long_values_are_cut_in_messages(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_params(_params(tmp_path, "seed: '" + "x" * 100_000 + "'\n"))
    assert len(str(err.value)) < 300


# 9. memory bombs in tars and images -----------------------------------------------------------


def test_a_member_declaring_gigabytes_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("k.png")
        info.size = 6 << 30
        tar.addfile(info)  # header only: a sparse 6 GiB member of a tiny file
    with pytest.raises(ValueError, match=r"member 'k.png' declares 6,442,450,944 bytes"):
        list(tario.iter_shard(path))


def test_an_image_with_too_many_pixels_is_refused_before_decoding(tmp_path):
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")  # 25 M pixels in a few KB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ValueError, match="5000x5000 pixels is over the limit"):
        tario.decode_png(buf.getvalue(), "big.png")
    (tmp_path / "big.png").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="big.png: image of 5000x5000"):
        read_image_folder(tmp_path, SPACE, classifier=lambda x: {})


# 10. messages, not tracebacks; refused before any work ----------------------------------------


def _run_stage(tmp_path, stage, params_file, capsys):
    rc = pipeline_main([stage, "--params", str(params_file)])
    err = capsys.readouterr().err
    return rc, err


def test_steps_beyond_the_schedule_are_refused_before_any_work(tmp_path, tiny_world, capsys):
    tiny_params(tmp_path, tiny_world)
    p = tmp_path / "params.yaml"
    p.write_text(p.read_text().replace("steps: 2", "steps: 5000"))
    rc, err = _run_stage(tmp_path, "generate", p, capsys)
    assert rc == 2 and "model.steps: 5000 is more than the scheduler's 1000" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.ledger").exists()


def test_an_output_under_a_file_is_one_line(tmp_path, tiny_world, capsys):
    tiny_params(tmp_path, tiny_world)
    (tmp_path / "afile").write_text("not a folder")
    p = tmp_path / "params.yaml"
    p.write_text(
        p.read_text().replace(f"dir: {tmp_path / 'out'}", f"dir: {tmp_path / 'afile' / 'out'}")
    )
    rc, err = _run_stage(tmp_path, "generate", p, capsys)
    assert rc == 2 and err.startswith("fairsynth: error: ") and "afile" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _reference_params(tmp_path, ref):
    return _params(tmp_path, f"reference: {{source: shards, path: {ref}}}\n"
                   "target: {marginals: {skin: {light: 0.5, dark: 0.5}}}\n")  # fmt: skip


def test_reference_shard_problems_name_the_shard_and_sample(tmp_path, capsys):
    ref = tmp_path / "ref"
    ref.mkdir()
    empty = ref / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    p = _reference_params(tmp_path, ref)
    rc, err = _run_stage(tmp_path, "audit", p, capsys)
    assert rc == 2 and "hold no samples" in err and "Traceback" not in err
    empty.unlink()
    images, _ = render_batch(2, seed=0)
    tario.write_shard(ref / "r-000000.tar", [
        {"__key__": "a_b", "png": images[0]},  # fine
        {"__key__": "c", "d.png": images[1]},  # a key with a dot: member c.d.png
    ])  # fmt: skip
    rc, err = _run_stage(tmp_path, "audit", p, capsys)
    assert rc == 2 and "sample 'c' has no .png member" in err and "KeyError" not in err


def test_images_of_different_sizes_name_the_file(tmp_path):
    images, _ = render_batch(2, seed=0)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b.png: image of 40x40 pixels; .* \(32x32, as .*a.png\)"):
        read_image_folder(tmp_path, SPACE, classifier=lambda x: {})


# 11. a damaged ledger ---------------------------------------------------------------------------


def test_a_damaged_ledger_batch_is_set_aside_and_generated_again(tmp_path, tiny_world, capsys):
    gen = "{mode: standalone, n: 6, budget: 18, seed: 5}"
    params = tiny_params(tmp_path, tiny_world, mode="sample", gen=gen)
    whole = stage_generate(params, None, progress=False)
    out = tmp_path / "out"
    expected = _snapshot(out)

    def crash_after_three(state):
        if state.next_batch == 3:
            raise Crash

    # the same params into a new folder, killed after three batches
    params = replace(params, output=replace(params.output, dir=str(tmp_path / "again")))
    with pytest.raises(Crash):
        stage_generate(params, None, progress=False, on_batch=crash_after_three)
    (ledger,) = (tmp_path / "again.ledger").iterdir()
    batch = ledger / "batch-000001.tar"
    batch.write_bytes(batch.read_bytes()[:700])  # truncated
    resumed = stage_generate(params, None, progress=False)
    assert "batch-000001.tar is damaged" in capsys.readouterr().err
    assert resumed["resumed_at_batch"] == 1 and resumed["accepted"] == whole["accepted"]
    assert _snapshot(tmp_path / "again") == expected


# 12. the feed names what it cannot read ---------------------------------------------------------


@pytest.fixture
def damaged_shards(tmp_path):
    images, _ = render_batch(8, seed=4)
    samples = []
    for i, im in enumerate(images):
        s = {"__key__": f"s{i}", "png": im, "json": {"skin": "light", "accepted": True}, "cls": 0}
        if i == 2:
            s["png"] = b"\x89PNG broken"
        if i == 5:
            del s["json"]
        samples.append(s)
    tario.write_shard(tmp_path / "syn-000000.tar", samples[:4])
    tario.write_shard(tmp_path / "syn-000001.tar", samples[4:])
    return tmp_path


def test_the_feed_skips_unreadable_samples_naming_them(damaged_shards, capfd):
    from fairsynth.data.feed import Feed, make_loader

    feed = Feed(damaged_shards, shuffle=0)
    loader = make_loader(feed, batch_size=2, num_workers=2)
    keys = [k for batch in loader for k in batch["__key__"]]
    assert sorted(keys) == ["s0", "s1", "s3", "s4", "s6", "s7"]
    assert feed.skipped == 2
    text = capfd.readouterr().err
    assert "syn-000000.tar: sample 's2'" in text and "syn-000001.tar: sample 's5'" in text


def test_the_feed_can_fail_naming_the_sample(damaged_shards):
    from fairsynth.data.feed import Feed, make_loader

    feed = Feed(damaged_shards, shuffle=0, on_error="raise")
    with pytest.raises(Exception, match=r"syn-00000[01].tar: sample 's[25]' cannot be read"):
        list(make_loader(feed, batch_size=2, num_workers=2))


def test_os_errors_keep_the_file_name():
    from fairsynth.app.errors import message

    exc = OSError(28, "No space left on device")
    exc.filename = "/data/out/x.tar"
    assert "/data/out/x.tar" in message(exc) and "No space left" in message(exc)
    assert message(KeyError("png")) == "missing 'png'"
