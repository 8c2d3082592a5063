"""Chaos: SIGKILL a toy-world generation at random moments, resume it, compare with an
uninterrupted run.

    python benchmarks/chaos.py [--kills 20] [--params params.yaml] [--steps 10] [--n 64]

Runs the generation stage (``fairsynth.app.stages.generate.stage_generate``, the one DVC and Prefect run)
in a subprocess; once the subprocess holds the output lock, it is killed after a random delay
within the generation's duration, then started again, until ``--kills`` kills have landed and a
run has completed. Prints: kills survived, samples lost, duplicates, quota errors, and whether the
published content is identical to the uninterrupted run's (same keys, same image bytes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from fairsynth.app.config import as_dict, load_params, yaml_load
from fairsynth.data import tario

RUN = (
    "import sys; from fairsynth.app.config import load_params; "
    "from fairsynth.app.stages.generate import stage_generate; "
    "stage_generate(load_params(sys.argv[1]), None, progress=False)"
)


def write_params(base: dict, out: Path, path: Path) -> Path:
    p = json.loads(json.dumps(base))
    p["output"] = {**p.get("output", {}), "dir": str(out)}
    path.write_text(yaml.safe_dump(p))
    return path


def spawn(params: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", RUN, str(params)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def wait_for_lock(proc: subprocess.Popen, lock: Path) -> None:
    while proc.poll() is None:
        try:
            if json.loads(lock.read_text()).get("pid") == proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)


def published(out: Path) -> tuple[dict[str, bytes], list[str], dict]:
    samples, keys = {}, []
    for shard in sorted(out.glob("*.tar")):
        for s in tario.iter_shard(shard):
            keys.append(s["__key__"])
            samples[s["__key__"]] = s["png"]
    return samples, keys, json.loads((out / "index.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mode", default="none", help="guidance mode (distribution needs adp.path)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/chaos.json"))
    a = ap.parse_args(argv)
    load_params(a.params)  # validate first
    base = yaml_load(
        Path(a.params).read_text()
    )  # YAML 1.2 booleans: class names no/yes stay strings
    base["model"] = {**base.get("model", {}), "steps": a.steps}
    base["guidance"] = {**base.get("guidance", {}), "mode": a.mode, "batch_size": a.batch_size}
    base["generate"] = {**base.get("generate", {}), "n": a.n, "mode": "standalone",
                        "budget": 200 * a.n, "seed": a.seed}  # fmt: skip
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref_params = write_params(base, tmp / "whole", tmp / "whole.yaml")
        proc = spawn(ref_params)
        wait_for_lock(proc, tmp / "whole.lock")
        t0 = time.time()
        if proc.wait() != 0:
            print(proc.stderr.read().decode(), file=sys.stderr)
            return 1
        duration = time.time() - t0
        want, want_keys, want_index = published(tmp / "whole")
        print(f"uninterrupted run: {len(want)} accepted, {want_index['generated']} generated, "
              f"{duration:.1f} s of generation", flush=True)  # fmt: skip

        params = write_params(base, tmp / "chaos", tmp / "chaos.yaml")
        kills, starts = 0, 0
        while True:
            starts += 1
            proc = spawn(params)
            wait_for_lock(proc, tmp / "chaos.lock")
            if kills < a.kills:
                try:
                    proc.wait(timeout=rng.uniform(0.02, 0.5) * duration)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    print(f"  kill {kills}/{a.kills}", flush=True)
                    continue
            code = proc.wait()
            if code != 0:
                print(proc.stderr.read().decode(), file=sys.stderr)
                return 1
            if (tmp / "chaos" / "index.json").is_file() and kills >= a.kills:
                break
        got, got_keys, index = published(tmp / "chaos")
        generate_params = as_dict(load_params(params).generate)
    counts = collections.Counter(got_keys)
    quotas = np.asarray(index["quotas"])
    accepted = np.asarray(index["accepted"])
    result = {
        "kills_survived": kills,
        "starts": starts,
        "samples_lost": len(set(want) - set(got)),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "quota_errors": int((accepted != quotas).sum())
        if index["complete"]
        else int((accepted > quotas).sum()),
        "complete": index["complete"],
        "content_identical": got == want and got_keys == want_keys,
        "accepted": int(accepted.sum()),
        "params": generate_params,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"kills survived {kills} ({starts} starts); samples lost {result['samples_lost']}; "
          f"duplicates {result['duplicates']}; quota errors {result['quota_errors']}; "
          f"content identical to the uninterrupted run: {'yes' if result['content_identical'] else 'NO'}")  # fmt: skip
    ok = result["content_identical"] and not (
        result["samples_lost"] or result["duplicates"] or result["quota_errors"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
