"""Flow: render the biased reference dataset, then audit the toy DDPM against it.

python -m flows.toyfaces_audit [params.yaml]
"""

from __future__ import annotations

import sys

from prefect import flow

from fairsynth.app.config import load_params
from tasks.toyfaces import audit_model_task, build_reference_task


@flow(name="toyfaces-audit")
def toyfaces_audit(params_file: str = "params.yaml", out_dir: str = "data/audit") -> dict:
    params = load_params(params_file)
    reference = build_reference_task(params.reference)
    return audit_model_task(params.audit_model, reference, out_dir)


if __name__ == "__main__":
    print(toyfaces_audit(*sys.argv[1:2]))
