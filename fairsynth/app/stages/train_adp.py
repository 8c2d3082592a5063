"""The train_adp stage: record h_t trajectories of the base model, pseudo-label them, train and save the ADP (``fairsynth.app.train_adp``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fairsynth.app.config import Params
from fairsynth.app.stages.common import ADP_OUT, stage_main
from fairsynth.data.runlog import write_run_record


def stage_train_adp(params: Params, out: str | Path = ADP_OUT, progress: bool = False) -> str:
    from fairsynth.app.train_adp import train_adp_from_params

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
