import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.data.reference import audit, read_image_folder, read_shards
from fairsynth.toyfaces.dataset import build_reference
from fairsynth.toyfaces.render import ATTRIBUTES
from tests.factories import labelled_folder

SPACE = AttributeSpace.from_dict(ATTRIBUTES)


def test_image_folder_with_csv_and_parquet(tmp_path):
    _, labels, frame = labelled_folder(tmp_path)
    frame.to_csv(tmp_path / "labels.csv", index=False)
    frame.to_parquet(tmp_path / "labels.parquet")
    for f in ("labels.csv", "labels.parquet"):
        data = read_image_folder(tmp_path, SPACE, tmp_path / f)
        assert data.source == "labels file"
        assert np.array_equal(data.labels["skin"], labels["skin"])


def test_image_folder_labelled_by_classifier(tmp_path):
    labelled_folder(tmp_path, 4)

    def clf(images):
        return {k: np.tile(np.eye(len(v))[0], (len(images), 1)) for k, v in ATTRIBUTES.items()}

    data = read_image_folder(tmp_path, SPACE, classifier=clf)
    assert data.source == "classifier" and len(data.keys) == 4


def test_unknown_class_in_labels_named(tmp_path):
    _, _, frame = labelled_folder(tmp_path)
    frame.loc[2, "hair"] = "purple"
    frame.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="purple"):
        read_image_folder(tmp_path, SPACE, tmp_path / "labels.csv")


def test_empty_and_corrupt_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        read_image_folder(tmp_path / "empty", SPACE, classifier=lambda x: {})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image_folder(tmp_path / "bad", SPACE, classifier=lambda x: {})


def test_shards_labels_from_parquet_and_json_members(tmp_path):
    labels = build_reference(tmp_path / "ref", n=40, seed=1, shard_size=16)
    data = read_shards(tmp_path / "ref", SPACE)
    assert data.source == "labels file" and len(data.keys) == 40
    (tmp_path / "ref" / "labels.parquet").unlink()
    data2 = read_shards(tmp_path / "ref", SPACE)
    assert data2.source == "shard metadata"
    expect = labels["skin"].cat.codes.to_numpy()
    assert np.array_equal(data2.labels["skin"], expect)


def test_truncated_shard(tmp_path):
    build_reference(tmp_path / "ref", n=10, seed=1)
    (tmp_path / "ref" / "labels.parquet").unlink()
    tar = tmp_path / "ref" / "reference-000000.tar"
    tar.write_bytes(tar.read_bytes()[:1500])
    with pytest.raises(ValueError, match="truncated|unreadable"):
        read_shards(tmp_path / "ref", SPACE)


def test_audit_counts_and_fd(tmp_path):
    build_reference(tmp_path / "ref", n=1000, seed=0)
    data = read_shards(tmp_path / "ref", SPACE)
    r = audit(data, Target.from_marginals(SPACE, {"skin": [0.5, 0.5]}))
    assert sum(r["counts"]) == 1000 and r["cells"] == ["light", "dark"]
    assert r["fd"] == pytest.approx(np.sqrt(2) * abs(r["fractions"][0] - 0.5), abs=1e-6)
    assert 0.25 < r["fd"] < 0.5


def _folder_params(tmp_path, attributes: dict, frame):
    from fairsynth.app.config import parse_params

    frame.to_csv(tmp_path / "labels.csv", index=False)
    first = next(iter(attributes))
    return parse_params({
        "reference": {"source": "folder", "path": str(tmp_path), "labels": str(tmp_path / "labels.csv")},
        "attributes": attributes,
        "target": {"marginals": {first: dict.fromkeys(attributes[first], 1 / len(attributes[first]))}},
        "output": {"dir": str(tmp_path.parent / "out")},
    })  # fmt: skip


def test_the_audit_stops_on_a_verifier_that_rejects_the_reference(tmp_path):
    """64x64 references against the 32x32 toy verifier: every image rejected. The audit stops,
    naming the verifier and the count, instead of recording an accuracy of 0 nobody reads."""
    from fairsynth.app.stages.audit import stage_audit

    images, _, frame = labelled_folder(tmp_path)
    for i, im in enumerate(images):  # the same faces, twice the size
        Image.fromarray(im).resize((64, 64)).save(tmp_path / f"img{i}.png")
    params = _folder_params(tmp_path, {"skin": ["light", "dark"]}, frame)
    with pytest.raises(ValueError, match=r"verify.verifier: toyfaces rejected 6 of the 6"):
        stage_audit(params, tmp_path.parent / "audit")
    assert not (tmp_path.parent / "audit" / "audit.json").exists()


def test_the_audit_stops_on_a_verifier_that_judges_none_of_the_attributes(tmp_path):
    from fairsynth.app.stages.audit import stage_audit

    _, _, frame = labelled_folder(tmp_path)
    frame["mood"] = ["happy", "sad"] * 3
    params = _folder_params(tmp_path, {"mood": ["happy", "sad"]}, frame)
    with pytest.raises(ValueError, match=r"judges none of the attributes \['mood'\] \(it judges"):
        stage_audit(params, tmp_path.parent / "audit")


def test_a_users_reference_as_it_is(tmp_path):
    """Nested folders of JPEGs, a labels file with the user's own column names, absolute paths,
    other spellings and values of the classes: read with a column and class mapping."""
    from fairsynth.data.labels import LabelMapping

    (tmp_path / "tmp").mkdir()
    images, labels, frame = labelled_folder(tmp_path / "tmp", n=6)
    for i, im in enumerate(images):
        where = tmp_path / "ref" / ("a" if i % 2 else "b") / f"face {i}.jpg"
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(where, quality=95)
    ours = pd.DataFrame({
        "path": [str(tmp_path / "ref" / ("a" if i % 2 else "b") / f"face {i}.jpg") for i in range(6)],
        "Skin Tone": ["Light" if v == 0 else "Fitzpatrick V" for v in labels["skin"]],
    })  # fmt: skip
    ours.to_csv(tmp_path / "mine.csv", index=False)
    space = AttributeSpace.from_dict({"skin": ["light", "dark"]})
    with pytest.raises(ValueError, match=r"needs a column naming each image, one of \['file', "
                                         r"'file_name', 'key'\] \(columns: \['path', 'Skin Tone'\]\)"):  # fmt: skip
        read_image_folder(tmp_path / "ref", space, tmp_path / "mine.csv")
    ours.rename(columns={"path": "file_name"}).to_csv(tmp_path / "mine.csv", index=False)
    with pytest.raises(ValueError, match=r"no column 'skin' for attribute 'skin' \(columns: "):
        read_image_folder(tmp_path / "ref", space, tmp_path / "mine.csv")
    mapping = LabelMapping(columns={"skin": "Skin Tone"})
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['fitzpatrick v'\]"):
        read_image_folder(tmp_path / "ref", space, tmp_path / "mine.csv", mapping=mapping)
    mapping = LabelMapping({"skin": "Skin Tone"}, {"skin": {"Fitzpatrick V": "dark"}})
    data = read_image_folder(tmp_path / "ref", space, tmp_path / "mine.csv", mapping=mapping)
    assert sorted(data.keys) == sorted(f"{'a' if i % 2 else 'b'}/face {i}.jpg" for i in range(6))
    by_key = dict(zip(data.keys, data.labels["skin"], strict=True))
    assert [by_key[f"{'a' if i % 2 else 'b'}/face {i}.jpg"] for i in range(6)] == list(
        labels["skin"]
    )
    strict = LabelMapping({"skin": "Skin Tone"}, {"skin": {"Fitzpatrick V": "dark"}}, False)
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['Light'\]"):
        read_image_folder(tmp_path / "ref", space, tmp_path / "mine.csv", mapping=strict)


def test_an_imagefolder_metadata_file_is_read_as_it_is(tmp_path):
    """Hugging Face's ImageFolder convention: metadata.jsonl beside the images, file_name."""
    _, labels, frame = labelled_folder(tmp_path)
    frame.rename(columns={"file": "file_name"}).to_json(
        tmp_path / "metadata.jsonl", orient="records", lines=True
    )
    data = read_image_folder(tmp_path, SPACE)
    assert data.source == "labels file" and len(data.keys) == 6
    assert np.array_equal(data.labels["eyeglasses"], labels["eyeglasses"])


def test_the_params_check_the_label_mapping_by_key():
    from fairsynth.app.config import ConfigError, parse_params

    base = {"attributes": {"skin": ["light", "dark"]},
            "target": {"marginals": {"skin": {"light": 0.5, "dark": 0.5}}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"reference.columns.tone: not an attribute \['skin'\]"):
        parse_params({**base, "reference": {"columns": {"tone": "Tone"}}})
    with pytest.raises(ConfigError, match=r"reference.classes.skin: 'V' maps to 'darkest', which"):
        parse_params({**base, "reference": {"classes": {"skin": {"V": "darkest"}}}})
    from fairsynth.app.stages.reference import label_mapping

    ok = parse_params({**base, "reference": {"classes": {"skin": {"V": "dark"}}}})
    assert label_mapping(ok.reference).classes == {"skin": {"V": "dark"}}
