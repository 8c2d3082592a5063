"""The train_adp stage: record h_t trajectories of the base model, pseudo-label them, train and save the ADP (``fairsynth.app.train_adp``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fairsynth.app.config import Params
from fairsynth.app.stages.common import stage_main
from fairsynth.data.runlog import write_run_record
from fairsynth.run.lock import OutputLock


def stage_train_adp(params: Params, out: str | Path | None = None, progress: bool = False,
                    force: bool = False) -> str:  # fmt: skip
    """Train the ADP into ``out`` (default: ``adp.path``); a folder that already holds one
    trained from the same inputs (its recorded ``inputs_fingerprint``) is left as it is unless
    ``force``."""
    from fairsynth.app.train_adp import adp_is_current, adp_out, train_adp_from_params

    out = adp_out(params) if out is None else out
    with OutputLock(out):
        if not force and adp_is_current(params, out):
            print(f"{out}: the ADP is up to date (same inputs), not trained again",
                  file=sys.stderr)  # fmt: skip
            return str(out)
        t0 = time.time()
        train_adp_from_params(params, out, progress=progress)
        write_run_record(out, {"seconds": round(time.time() - t0, 1)})
    return str(out)


def _cli(params: Params) -> None:
    stage_train_adp(params, progress=True)


def main(argv: list[str] | None = None) -> int:
    return stage_main("train_adp", _cli, argv)


if __name__ == "__main__":
    sys.exit(main())
