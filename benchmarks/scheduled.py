"""Benchmark: the balance deployment on a schedule, against a real Prefect server.

    python benchmarks/scheduled.py [--params params.yaml] [--cron "* * * * *" | --every S]
        [--minutes 5] [--out benchmarks/results/scheduled.json]

Starts ``prefect server start`` on loopback (its own PREFECT_HOME), serves
``python -m flows.balance PARAMS --serve CRON`` in this folder for ``--minutes``, then lets a
run still going finish and ``--then`` more runs complete, and reports every run of the
deployment: state, start, seconds, whether the scheduler started it; how many ran at once at most (bar: 1); how often the ADP folder's
files were written (polled once a second; bar: at most once); and the seconds of each run
after the first complete one with nothing changed (bar: < 15 s). Run it on an up-to-date
``make demo`` output, or remove ``data/adp`` first to see a long first run with ticks arriving
meanwhile (they are cancelled: ``CANCEL_NEW``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings  # noqa: E402

from tests.flow_watch import finished, flow_runs, local_server, overlaps, seconds, served  # noqa: E402

SKIP_BAR_S = 15.0


def adp_stamp(folder: Path) -> tuple:
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return tuple((str(p), p.stat().st_mtime_ns) for p in files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    when = ap.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None)
    when.add_argument("--every", type=float, default=None)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--adp", type=Path, default=Path("data/adp"))
    ap.add_argument(
        "--wait-s", type=float, default=1800, help="most seconds to wait for the last run"
    )
    ap.add_argument("--then", type=int, default=2,
                    help="after --minutes, wait for this many runs to complete after the first")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scheduled.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)
    cron = a.cron if a.cron or a.every else "* * * * *"

    work = Path(".scheduled-bench")
    work.mkdir(exist_ok=True)
    adp_writes, last, most_running = 0, adp_stamp(a.adp), 0
    t0 = time.monotonic()
    with local_server(work / "prefect-server") as api:
        with served(a.params, api, every=a.every, cron=cron, log=work / "serve.log"):
            while True:
                runs = flow_runs(api)
                running = sum(r["state_type"] == "RUNNING" for r in runs)
                most_running = max(most_running, running)
                stamp = adp_stamp(a.adp)
                if stamp != last and stamp:
                    adp_writes += 1
                last = stamp
                elapsed = time.monotonic() - t0
                completed = sum(r["state_type"] == "COMPLETED" for r in runs)
                if elapsed > 60 * a.minutes and running == 0 and completed > a.then:
                    break
                if elapsed > 60 * a.minutes + a.wait_s:
                    print("gave up waiting for the running flow run", file=sys.stderr)
                    break
                time.sleep(1.0)
    done = finished(runs)
    table = [
        {
            "name": r["name"],
            "state": r["state_type"],
            "auto_scheduled": r["auto_scheduled"],
            "expected_start": r["expected_start_time"],
            "start": r["start_time"],
            "seconds": round(seconds(r), 1) if r in done else None,
            "message": (r.get("state") or {}).get("message"),
        }
        for r in runs
    ]
    completed = [r for r in done if r["state_type"] == "COMPLETED"]
    later = [round(seconds(r), 1) for r in completed[1:]]
    for row in table:
        print(f"{row['name']:28} {row['state']:10} start {row['start'] or '-':32} "
              f"{row['seconds'] if row['seconds'] is not None else '-':>7} s")  # fmt: skip
    bars = [
        Bar("runs at once, at most (polled)", most_running, "<=", 1),
        Bar("overlapping finished runs (start/end times)", overlaps(runs), "<=", 0),
        Bar("ADP folder writes", adp_writes, "<=", 1),
    ]
    if later:
        bars.append(
            Bar("slowest run after the first (nothing changed), s", max(later), "<=", SKIP_BAR_S)
        )
    result = {
        "runs": table,
        "completed": len(completed),
        "cancelled": sum(r["state_type"] == "CANCELLED" for r in runs),
        "seconds_after_first": later,
        "most_running": most_running,
        "adp_writes": adp_writes,
        "bars": bars_json(bars),
        "settings": run_settings(params=a.params, cron=cron if a.every is None else None,
                                 every=a.every, minutes=a.minutes),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
