"""The dataset card: a ``README.md`` in the Hugging Face dataset-card conventions (YAML header
the Hub and ``datasets`` read, then a body people read), made from a run's publication facts
(``fairsynth.app.stages.publication``)."""

from __future__ import annotations

import yaml

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))  # fmt: skip


def size_category(n: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if n < limit), "n>10M")


def card_header(facts: dict) -> dict:
    """The YAML header: ``configs`` point ``datasets`` and the Hub at the shards."""
    return {
        "license": facts["license"],
        "pretty_name": facts["name"],
        "task_categories": ["image-classification"],
        "size_categories": [size_category(facts["n"])],
        "tags": [
            "synthetic",
            "fairness",
            "debiasing",
            "diffusion",
            "distribution-guidance",
            "webdataset",
            "fairsynth",
        ],  # fmt: skip
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": [s["path"] for s in facts["shards"]]}],
            }
        ],
    }


def dataset_card(facts: dict) -> str:
    header = yaml.safe_dump(card_header(facts), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{header}---\n", f"# {facts['name']}\n", _summary(facts), _partial(facts)]
    parts += [_what(facts), _distribution(facts), _filling(facts), _verifiers(facts)]
    parts += [_limitations(facts), _loading(facts), _provenance(facts)]
    return "\n".join(p.rstrip() + "\n" for p in parts if p)


def _table(head: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    """Inline code inside a table cell: GFM splits cells at a bare ``|`` even in code."""
    return "`" + str(text).replace("|", "\\|") + "`"


def number(x: float | None, digits: int = 3) -> str:
    """A measured number as the card and the page show it ("–" where it was not measured)."""
    return "–" if x is None else f"{x:.{digits}f}"


def _summary(f: dict) -> str:
    m = f["metrics"]
    before = f" (the reference: {number(m['fd_before'])})" if m.get("fd_before") is not None else ""
    return (
        f"{f['n']} synthetic face images generated with **Distribution Guidance** "
        f"(Parihar et al., CVPR 2024) by fairsynth, so that the "
        f"cells of {' × '.join(f['attributes'])} follow a chosen target. Every sample was "
        f"judged by the verifier(s) below before it was accepted. Fairness discrepancy to the "
        f"target, as the verifier counts: {number(m['fd_after'])}{before}.\n"
    )


def _partial(f: dict) -> str:
    """A partial set (the params accepted one) says so before anything else."""
    if f.get("complete", True):
        return ""
    short = ", ".join(f"{cell}: {n}" for cell, n in f.get("shortfall", {}).items())
    return (
        f"> **This set is partial.** Generation spent its budget before every quota was met "
        f"(short: {short or 'see the manifest'}); it was published because the params accept a "
        f"partial set (`generate.accept_partial`). Its distribution is not the target's.\n"
    )


def _what(f: dict) -> str:
    model, g, adp = f["model"], f["guidance"], f["adp"]
    rows = [
        ["diffusion model", f"`{model['path']}` ({model['kind']})"],
        ["sampler", f"{model['scheduler']}, {model['steps']} steps, eta {model['eta']}"],
        ["guidance", f"{g['mode']} (loss {g['loss']}, strength {g['strength']:g}, "
                     f"trust region {g['max_step']:g}, batch {g['batch_size']})"],  # fmt: skip
        ["h-space layer", f"`{model['layer']}`"],
        ["attribute predictor (ADP)", f"`{adp['path']}`" + (f", {adp['about']}" if adp.get("about") else "")],
        ["verifier(s)", ", ".join(f"`{v}`" for v in f["verifiers"].values() if v)],
        ["generation mode", f["mode"]],
    ]  # fmt: skip
    if model.get("prompts"):
        rows.append(["prompts", "; ".join(f"“{p}”" for p in model["prompts"])])
    return "## What it is\n\n" + _table(["", ""], rows)


def _distribution(f: dict) -> str:
    ref = f["reference"]
    est = f.get("estimated_true") or {}
    est = est if "probs" in est else {}
    head = ["cell", "reference", "reference fraction", "target", "quota", "published"]
    head += ["estimated true", "95 % interval"] if est else []
    rows = []
    ref_total = sum(ref["counts"]) if ref.get("counts") else 0
    for i, cell in enumerate(f["cells"]):
        r = [_code(cell)]
        if ref_total:
            r += [ref["counts"][i], number(ref["counts"][i] / ref_total)]
        else:
            r += ["–", "–"]
        r += [number(f["target"][i]), f["quotas"][i], f["counts"][i]]
        if est:
            r += [number(est["probs"][i]), f"[{number(est['low'][i])}, {number(est['high'][i])}]"]
        rows.append(r)
    m = f["metrics"]
    text = "## The reference audit, the target and what was published\n\n"
    if ref_total:
        text += (f"The reference ({ref['source']}, {ref_total} samples audited; labels: "
                 f"{ref.get('label_source') or 'the verifier'}) is imbalanced: FD "
                 f"{number(m['fd_before'])} to the target.\n\n")  # fmt: skip
    text += _table(head, rows)
    text += (f"\nFD {number(m['fd_after'])}, KL(target‖published) {number(m['kl_target_to_after'])}, "
             f"TV {number(m['tv_after'])}" + (" (reference + synthetic)" if f["mode"] == "augment" else "")
             + ".\n")  # fmt: skip
    if est:
        lo, hi = est.get("fd_interval", (None, None))
        text += (f"\nThe *estimated true* column corrects the verifier's count for its own "
                 f"errors, from its confusion on the labelled audit: estimated true FD "
                 f"{number(est.get('fd'))} ({number(lo)}–{number(hi)}).\n")  # fmt: skip
    return text


def _filling(f: dict) -> str:
    rows = [[f"`{k}`", v] for k, v in sorted(f["rejections"].items(), key=lambda kv: -kv[1])]
    text = (f"## How it was filled\n\n{f['generated']} samples generated for {f['n']} accepted "
            f"({f['samples_per_accepted']:.2f} generated per accepted).")  # fmt: skip
    return text + ("\n\n" + _table(["rejected because", "samples"], rows) if rows else "\n")


def _verifiers(f: dict) -> str:
    conf = f.get("confusion") or {}
    roles = [r for r in ("first", "second") if conf.get(r)]
    if not roles:
        return ("## Verifiers\n\nNo labelled audit of the verifiers was run "
                "(`verify.audit_n: 0` or an unlabelled reference): their error is unknown.\n")  # fmt: skip
    text = (f"## Verifiers\n\nEach verifier was audited on {conf.get('n')} labelled reference "
            f"samples; rows are the true class, columns the verifier's.\n")  # fmt: skip
    for role in roles:
        v = conf[role]
        for attr in f["attributes"]:  # in the space's order, whatever order the audit has
            a = v.get(attr)
            if not isinstance(a, dict) or "matrix" not in a:
                continue
            rows = [[f"**{c}**", *row] for c, row in zip(a["classes"], a["matrix"], strict=True)]
            text += (f"\n`{v.get('verifier')}` ({role}) on **{attr}**: accuracy "
                     f"{number(a['accuracy'])}, {a.get('rejected', 0)} not confident\n\n")  # fmt: skip
            text += _table(["true \\ verified", *a["classes"]], rows)
    if f.get("disagreement_rate") is not None:
        text += (f"\nThe two verifiers disagreed on {f['disagreement_rate']:.1%} of the "
                 "generated samples (those were rejected).\n")  # fmt: skip
    return text


def limitations(f: dict) -> list[str]:
    """What the set does not show (the card's list, Croissant's ``rai:dataLimitations``)."""
    conf = f.get("confusion") or {}
    items = [
        "Attributes are the verifier's judgement, not ground truth: a verifier's error on the "
        "audit above carries into the counts" + ("" if conf.get("first") else " (unmeasured here)") + ".",
        f"Only {' × '.join(f['attributes'])} {'was' if len(f['attributes']) == 1 else 'were'} "
        "balanced; every other attribute keeps the diffusion model's own bias.",
        "Samples are synthetic: they inherit the model's artefacts and its notion of each class.",
    ]  # fmt: skip
    if f["model"]["path"] == "toyfaces":
        items.append(
            "This is the procedural *toy faces* world (32×32 renders, a tiny DDPM): it shows the "
            "method and the pipeline end to end; it says nothing about real faces, real "
            "demographic attributes or a real verifier's error."
        )
    return items


def _limitations(f: dict) -> str:
    return "## Known limitations\n\n" + "".join(f"- {i}\n" for i in limitations(f))


def _loading(f: dict) -> str:
    out = f["output_dir"]
    tars = [f"{out}/{s['shard']}" for s in f["shards"]]
    return f"""## How to load

Each sample is `KEY.png` (the image), `KEY.json` (the verified class of each attribute, the
cell, the verifier's confidence) and `KEY.cls` (the cell index in the order above).

```python
import webdataset as wds
ds = wds.WebDataset({tars!r}).decode("pil")

from datasets import load_dataset   # this card's `configs`
ds = load_dataset("{f["card_dir"]}", split="train")

from fairsynth.data.feed import Feed, make_loader
loader = make_loader(Feed("{out}"), batch_size=64)
```

`{out}/manifest.parquet` lists every generated sample (accepted or not, with the reason).
"""


def _provenance(f: dict) -> str:
    rows = [
        ["params hash", f"`{f['params_hash']}`"],
        ["generation fingerprint", f"`{f['fingerprint']}`"],
        ["guidance hash", f"`{f['guidance_hash']}`"],
        *[[f"`{s['path']}`", f"sha256 `{s['sha256']}` ({s['samples']} samples)"] for s in f["shards"]],
        [f"`{f['manifest']['path']}`", f"sha256 `{f['manifest']['sha256']}`"],
    ]  # fmt: skip
    return "## Provenance\n\n" + _table(["", ""], rows)
