"""``croissant.json``: the published set as ML Commons Croissant 1.1 metadata with the
Responsible-AI vocabulary (RAI 1.0), made from a run's publication facts like the card.

One RecordSet, ``samples``: the image (each shard's ``*.png`` members), its cell and each
attribute (the manifest's columns, joined on the sample key; rejected samples are in the
manifest only, so the join keeps the published ones)."""

from __future__ import annotations

from fairsynth.data.card import limitations

CROISSANT = "http://mlcommons.org/croissant/1.1"
RAI = "http://mlcommons.org/croissant/RAI/1.0"
LICENSES = {"cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
            "cc-by-sa-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
            "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
            "mit": "https://opensource.org/licenses/MIT",
            "apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0"}  # fmt: skip

_CR_TERMS = ("arrayShape", "citeAs", "column", "containedIn", "data", "dataType", "examples",
             "extract", "field", "fileObject", "fileProperty", "fileSet", "format", "includes",
             "isArray", "isLiveDataset", "jsonPath", "key", "md5", "parentField", "path",
             "recordSet", "references", "regex", "repeated", "replace", "samplingRate",
             "separator", "source", "subField", "transform")  # fmt: skip
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "dct": "http://purl.org/dc/terms/",
    "sc": "https://schema.org/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "prov": "http://www.w3.org/ns/prov#",
    "conformsTo": "dct:conformsTo",
    "equivalentProperty": "cr:equivalentProperty",
    **{t: f"cr:{t}" for t in _CR_TERMS},
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
}
KEY_PATTERN = r"^(.+?)(?:\.png)?$"  # a member's name without its extension is the sample key


def croissant(facts: dict) -> dict:
    files = [_file_object(s["shard"], s["path"], "application/x-tar", s["sha256"])
             for s in facts["shards"]]  # fmt: skip
    manifest = _file_object("manifest", facts["manifest"]["path"], "application/x-parquet",
                            facts["manifest"]["sha256"])  # fmt: skip
    pngs = {
        "@type": "cr:FileSet",
        "@id": "png-files",
        "name": "png-files",
        "description": "The images: every shard's `KEY.png` members.",
        "containedIn": [{"@id": shard["@id"]} for shard in files],
        "encodingFormat": "image/png",
        "includes": "*.png",
    }
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT, RAI],
        "name": facts["name"],
        "description": _description(facts),
        "license": LICENSES.get(facts["license"], facts["license"]),
        "url": "https://github.com/fairsynth/fairsynth",
        "version": "1.0.0",
        "creator": {"@type": "sc:Organization", "name": "fairsynth"},
        "keywords": ["synthetic", "fairness", "debiasing", "diffusion", "distribution guidance"],
        "citeAs": (
            "Parihar et al., Balancing Act: Distribution-Guided Debiasing in Diffusion "
            "Models, CVPR 2024"
        ),  # fmt: skip
        "isLiveDataset": False,
        # the day the run that generated the shards finished (its run record): the one field
        # of this file that differs between runs of the same inputs
        **(
            {"datePublished": facts["timing"]["finished_at"][:10]}
            if facts.get("timing", {}).get("finished_at")
            else {}
        ),  # fmt: skip
        "distribution": [*files, manifest, pngs],
        "recordSet": [_samples(facts)],
    }
    return {**doc, **_rai(facts)}


def _file_object(ident: str, path: str, fmt: str, sha256: str) -> dict:
    return {"@type": "cr:FileObject", "@id": ident, "name": ident, "contentUrl": path,
            "encodingFormat": fmt, "sha256": sha256}  # fmt: skip


def _column(field: str, column: str, description: str) -> dict:
    return {
        "@type": "cr:Field",
        "@id": f"samples/{field}",
        "name": field,
        "description": description,
        "dataType": "sc:Text",
        "source": {"fileObject": {"@id": "manifest"}, "extract": {"column": column}},
    }


def _samples(facts: dict) -> dict:
    key = {
        "@type": "cr:Field",
        "@id": "samples/key",
        "name": "key",
        "description": "The sample key: the shard member's name without its extension.",
        "dataType": "sc:Text",
        "source": {
            "fileSet": {"@id": "png-files"},
            "extract": {"fileProperty": "filename"},
            "transform": {"regex": KEY_PATTERN},
        },
        "references": {"fileObject": {"@id": "manifest"}, "extract": {"column": "key"}},
    }
    image = {
        "@type": "cr:Field",
        "@id": "samples/image",
        "name": "image",
        "description": "The generated image (PNG).",
        "dataType": "sc:ImageObject",
        "source": {"fileSet": {"@id": "png-files"}, "extract": {"fileProperty": "content"}},
    }
    cells = ", ".join(facts["cells"])
    fields = [key, image, _column("cell", "cell", f"The verified cell, one of: {cells}.")]
    fields += [_column(a, a, f"The verified {a}: one of {', '.join(classes)}.")
               for a, classes in facts["attributes"].items()]  # fmt: skip
    return {
        "@type": "cr:RecordSet",
        "@id": "samples",
        "name": "samples",
        "description": "One record per published sample.",
        "key": {"@id": "samples/key"},
        "field": fields,
    }


def _description(f: dict) -> str:
    return (f"{f['n']} synthetic face images generated by fairsynth with Distribution Guidance "
            f"so that the cells of {' × '.join(f['attributes'])} follow a chosen target; every "
            "sample judged by the verifier(s) before it was accepted.")  # fmt: skip


def _rai(f: dict) -> dict:
    model, adp, ref = f["model"], f["adp"], f["reference"]
    verifiers = [v for v in f["verifiers"].values() if v]
    target = ", ".join(f"{c} {t:.3f}" for c, t in zip(f["cells"], f["target"], strict=True))
    counts = ", ".join(f"{c} {n}" for c, n in zip(f["cells"], f["counts"], strict=True))
    collection = (
        f"Generated, not collected: `{model['path']}` ({model['kind']}, {model['scheduler']}, "
        f"{model['steps']} steps) sampled with distribution guidance ({f['guidance']['mode']}, "
        f"loss {f['guidance']['loss']}) steered by the attribute predictor `{adp['path']}`"
        + (f" ({adp['about']})" if adp.get("about") else "")
        + f"; {f['generated']} samples generated, {f['n']} accepted by quota per cell "
        f"(target: {target})."
    )
    return {
        "rai:dataCollection": collection,
        "rai:dataCollectionType": ["Synthetic"],
        "rai:dataCollectionRawData": f"None: every image is generated by `{model['path']}`.",
        "rai:dataBiases": _biases(f),
        "rai:dataLimitations": limitations(f),
        "rai:dataUseCases": list(f["use_cases"]),
        "rai:annotationsPerItem": (
            f"One label per attribute ({', '.join(f['attributes'])}) and "
            f"the cell, from {len(verifiers)} automatic verifier(s)."
        ),  # fmt: skip
        "rai:dataAnnotationProtocol": (
            "Each sample's attributes are the first verifier's most confident class; a sample "
            "is accepted only when it is confident and, with a second verifier, both agree. "
            f"Published counts per cell: {counts}."
        ),
        "rai:machineAnnotationTools": verifiers,
        "rai:personalSensitiveInformation": (
            "None about real people: the images are generated. The attributes "
            f"({', '.join(f['attributes'])}) are the kind of demographic characteristics the "
            "set is meant to balance."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Regenerated from its params (same params, same "
            "bytes); a new run replaces the whole set."
        ),  # fmt: skip
        "prov:wasGeneratedBy": {
            "@type": "prov:Activity",
            "prov:used": [model["path"], adp["path"], *verifiers],
            "description": (
                f"fairsynth run: params hash {f['params_hash']}, generation "
                f"fingerprint {f['fingerprint']}, guidance hash "
                f"{f['guidance_hash']}; reference {ref['source']} "
                f"({ref.get('path') or 'embedded'})."
            ),  # fmt: skip
        },
    }


def _biases(f: dict) -> list[str]:
    out = []
    ref = f["reference"]
    if ref.get("counts"):
        total = sum(ref["counts"])
        mix = ", ".join(f"{c} {n / total:.3f}"
                        for c, n in zip(f["cells"], ref["counts"], strict=True))  # fmt: skip
        out.append(f"The reference ({ref['source']}, {total} samples) is imbalanced over the "
                   f"cells: {mix}; FD {f['metrics']['fd_before']:.3f} to the target.")  # fmt: skip
    conf = f.get("confusion") or {}
    for role in ("first", "second"):
        v = conf.get(role) or {}
        acc = [f"{a} {v[a]['accuracy']:.3f}" for a in f["attributes"]
               if isinstance(v.get(a), dict) and "accuracy" in v[a]]  # fmt: skip
        if acc:
            out.append(f"Verifier `{v.get('verifier')}` ({role}) audited on {conf.get('n')} "
                       f"labelled samples: accuracy {', '.join(acc)}; its errors carry into "
                       "the published counts.")  # fmt: skip
    out.append(f"Only {' × '.join(f['attributes'])} are balanced; every other attribute keeps "
               "the diffusion model's own bias.")  # fmt: skip
    return out
