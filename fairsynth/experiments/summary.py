"""The downstream experiment's report as text: one line a run, one table a scenario."""

from __future__ import annotations


def format_run(m: dict) -> str:
    return (f"{m['scenario']:<5} {m['setting']:<30} seed {m['seed']:>2}: accuracy "
            f"{m['accuracy']:.3f}, worst group {m['worst_group']:.3f}, gap {m['gap']:.3f}")  # fmt: skip


def format_report(r: dict) -> str:
    def ci(x: dict | None, sign: str = "") -> str:
        if x is None:
            return "-"
        if x["low"] is None:
            return f"{x['mean']:{sign}.3f}"
        return f"{x['mean']:{sign}.3f} [{x['low']:{sign}.3f}, {x['high']:{sign}.3f}]"

    columns = ("worst_group", "gap", "equalized_odds_difference", "accuracy")
    heads = ("worst group", "accuracy gap", "equalized odds diff.", "accuracy")
    lines = [
        f"Classifier of {r['label']!r}, groups of {r['sensitive']!r}, {r['arch']} x {r['steps']} "
        f"steps; {r['synthetic_n']} synthetic samples; {len(r['seeds'])} seeds; 95 % CI",
    ]
    if r.get("control"):
        c = r["control"]
        cells = ", ".join(f"{n} {a}/{q}" for n, a, q in zip(c["cells"], c["accepted"], c["quotas"],
                                                            strict=True))  # fmt: skip
        lines.append(f"rejection control (c): {cells} from {c['generated']} generated")
    for name, sc in r["scenarios"].items():
        noise = f", {sc['label_noise']:.0%} of their labels flipped" if sc["label_noise"] else ""
        lines += [
            f"\n[{name}] {sc['reference_n']} reference samples{noise}",
            f"{'dataset':<31}" + "".join(f"{h:>27}" for h in heads),
        ]
        for setting, s in sc["settings"].items():
            lines.append(f"{setting:<31}" + "".join(f"{ci(s.get(c)):>27}" for c in columns))
        for effect, e in sc["effects"].items():
            lines.append(
                f"{'effect ' + effect:<31}" + "".join(f"{ci(e.get(c)):>27}" for c in columns)
            )
    return "\n".join(lines)
