"""The report page: one self-contained ``report.html`` (inline PNG and SVG, no script, nothing
fetched) that shows a published dataset: before / target / after, samples per cell, the cost,
the verifiers' confusion, the timing and the provenance."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

from fairsynth.data.card import number
from fairsynth.data.grid import make_grid

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;
background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:1px solid
#dde1e6;padding-bottom:4px}.sub{color:#5b6672;margin:0 0 18px}
.tiles{display:flex;flex-wrap:wrap;gap:12px}.tile{background:#fff;border:1px solid #dde1e6;
border-radius:8px;padding:10px 14px;min-width:130px}.tile b{display:block;font-size:22px}
.tile span{color:#5b6672;font-size:13px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px}td,th{border:1px solid #dde1e6;
padding:4px 9px;text-align:right}th{background:#eef1f4}td:first-child,th:first-child{text-align:left}
.cells{display:flex;flex-wrap:wrap;gap:16px}.cell{background:#fff;border:1px solid #dde1e6;
border-radius:8px;padding:8px}.cell figcaption{font-size:13px;color:#3b4550;margin-bottom:4px}
img{image-rendering:pixelated;display:block}.ok{color:#1a7f37}.miss{color:#b42318}
.mats{display:flex;flex-wrap:wrap;gap:18px}code{font-size:13px}
"""


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def array_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def report_page(facts: dict, grids: dict[str, np.ndarray], distribution_png: bytes | None) -> str:
    e = html.escape
    body = [f"<h1>{e(facts['name'])}</h1>",
            f"<p class=sub>{facts['n']} synthetic samples balanced over "
            f"{e(' × '.join(facts['attributes']))} with distribution guidance "
            f"({e(facts['guidance']['mode'])}); generation mode {e(facts['mode'])}.</p>",
            _tiles(facts), _distribution(facts, distribution_png), _grids(grids),
            _cost(facts), _verifiers(facts), _timing(facts.get("timing") or {}),
            _provenance(facts)]  # fmt: skip
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{e(facts['name'])} — fairsynth report</title>"
        f"<link rel=icon href='data:,'><style>{STYLE}</style></head>\n"
        f"<body><main>\n{''.join(body)}\n</main></body></html>\n"
    )


def _table(head: list[str], rows: list[list[object]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _tiles(f: dict) -> str:
    m = f["metrics"]
    met = f["counts"] == f["quotas"]
    tiles = [
        (number(m.get("fd_before")), "FD before (reference)"),
        (number(m.get("fd_after")), "FD after"),
        (number(m.get("kl_target_to_after")), "KL(target‖after)"),
        (number(m.get("tv_after")), "TV after"),
        (f"{f['samples_per_accepted']:.2f}", "generated per accepted"),
        (f"<span class={'ok' if met else 'miss'}>{'met' if met else 'not met'}</span>", "quotas"),
    ]
    est = f.get("estimated_true") or {}
    if "fd" in est:
        tiles.insert(2, (number(est["fd"]), "estimated true FD"))
    inner = "".join(
        f"<div class=tile><b>{v}</b><span>{html.escape(k)}</span></div>" for v, k in tiles
    )
    return f"<div class=tiles>{inner}</div>"


def _distribution(f: dict, png: bytes | None) -> str:
    ref = f["reference"].get("counts")
    total = sum(ref) if ref else 0
    est = f.get("estimated_true") or {}
    est = est if "probs" in est else {}
    head = ["cell", "reference", "target", "quota", "published"] + (
        ["estimated true"] if est else []
    )
    rows = []
    for i, c in enumerate(f["cells"]):
        r = [f"<code>{html.escape(c)}</code>", number(ref[i] / total) if total else "–",
             number(f["target"][i]), f["quotas"][i], f["counts"][i]]  # fmt: skip
        if est:
            r.append(
                f"{number(est['probs'][i])} [{number(est['low'][i])}, {number(est['high'][i])}]"
            )
        rows.append(r)
    img = f"<img alt='before, target and after per cell' src='{png_data_uri(png)}'>" if png else ""
    return "<h2>Before, target, after</h2>" + img + _table(head, rows)


def _grids(grids: dict[str, np.ndarray]) -> str:
    figs = []
    for cell, images in grids.items():
        grid = make_grid(images, cols=min(8, len(images)), scale=2)
        figs.append(f"<figure class=cell><figcaption><code>{html.escape(cell)}</code> — "
                    f"first {len(images)}</figcaption><img alt='samples of {html.escape(cell)}' "
                    f"src='{png_data_uri(array_png(grid))}'></figure>")  # fmt: skip
    return "<h2>Samples per cell</h2><div class=cells>" + "".join(figs) + "</div>"


def _bars_svg(items: list[tuple[str, float]], width: int = 420, unit: str = "") -> str:
    """Horizontal bars as inline SVG (labels left, values right)."""
    top = max([v for _, v in items] + [1e-9])
    h, rows = 22, []
    for i, (label, v) in enumerate(items):
        w = 0 if top <= 0 else int(round(v / top * (width - 230)))
        y = i * h
        rows.append(f"<text x=0 y={y + 15} font-size=13>{html.escape(label)}</text>"
                    f"<rect x=150 y={y + 4} width={w} height=14 fill='#4c78a8'/>"
                    f"<text x={156 + w} y={y + 15} font-size=12>{html.escape(_fmt(v))}{unit}</text>")  # fmt: skip
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width={width} height={h * len(items) + 4} "
            f"role=img>{''.join(rows)}</svg>")  # fmt: skip


def _fmt(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.2f}"


def _cost(f: dict) -> str:
    items = sorted(f["rejections"].items(), key=lambda kv: -kv[1])
    text = (f"<h2>Cost</h2><p>{f['generated']} generated for {f['n']} accepted "
            f"(<b>{f['samples_per_accepted']:.3f}</b> generated per accepted).</p>")  # fmt: skip
    if items:
        text += "<p>Rejected samples by reason:</p>" + _bars_svg([(k, float(v)) for k, v in items])
    return text


def _verifiers(f: dict) -> str:
    conf = f.get("confusion") or {}
    out = ["<h2>Verifiers</h2>"]
    roles = [r for r in ("first", "second") if conf.get(r)]
    if not roles:
        out.append("<p>No labelled audit of the verifiers: their error is not measured.</p>")
    else:
        out.append(f"<p>Confusion on {conf.get('n')} labelled reference samples (rows: true "
                   "class; columns: the verifier's).</p><div class=mats>")  # fmt: skip
        for role in roles:
            v = conf[role]
            for attr in f["attributes"]:
                if isinstance(a := v.get(attr), dict) and "matrix" in a:
                    out.append(_matrix(f"{v.get('verifier')} ({role}) — {attr}", a))
        out.append("</div>")
    if f.get("disagreement_rate") is not None:
        out.append(
            f"<p>The verifiers disagreed on {f['disagreement_rate']:.1%} of the samples.</p>"
        )
    return "".join(out)


def _matrix(title: str, a: dict) -> str:
    m = np.asarray(a["matrix"], float)
    rows_sum = m.sum(1, keepdims=True)
    share = np.divide(m, rows_sum, out=np.zeros_like(m), where=rows_sum > 0)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in a["classes"])
    trs = []
    for c, row, srow in zip(a["classes"], m, share, strict=True):
        tds = "".join(f"<td style='background:rgba(76,120,168,{s * 0.8:.2f})'>{int(v)}</td>"
                      for v, s in zip(row, srow, strict=True))  # fmt: skip
        trs.append(f"<tr><th>{html.escape(c)}</th>{tds}</tr>")
    return (f"<figure><figcaption>{html.escape(title)}: accuracy {number(a.get('accuracy'))}"
            f"</figcaption><table><tr><th>true \\ verified</th>{head}</tr>{''.join(trs)}</table>"
            "</figure>")  # fmt: skip


def _timing(t: dict) -> str:
    split = t.get("time_split") or {}
    if not split and "wall_seconds" not in t:
        return ""
    # the run record's facts: the one section that differs between runs of the same inputs
    text = "<section id=run-timing><h2>Timing</h2>"
    if "wall_seconds" in t:
        text += (f"<p>Generation {t.get('generation_seconds', 0):.1f} s of a "
                 f"{t['wall_seconds']:.1f} s run" + (f", finished {html.escape(str(t['finished_at']))}"
                 if t.get("finished_at") else "") + ".</p>")  # fmt: skip
    if split:
        text += _bars_svg([(k, float(v)) for k, v in split.items()], unit=" s")
    return text + "</section>"


def _provenance(f: dict) -> str:
    model, adp = f["model"], f["adp"]
    rows = [
        ["params hash", f["params_hash"]], ["generation fingerprint", f["fingerprint"]],
        ["guidance hash", f["guidance_hash"]],
        ["model", f"{model['path']} ({model['kind']}, {model['scheduler']} {model['steps']} steps)"],
        ["ADP", adp["path"] + (f" — {adp['about']}" if adp.get("about") else "")],
        ["verifiers", ", ".join(v for v in f["verifiers"].values() if v)],
        *[[s["path"], f"sha256 {s['sha256'][:16]}… ({s['samples']} samples)"] for s in f["shards"]],
    ]  # fmt: skip
    esc = [[f"<code>{html.escape(str(a))}</code>", html.escape(str(b))] for a, b in rows]
    return "<h2>Provenance</h2>" + _table(["", ""], esc)
