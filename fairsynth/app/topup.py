"""Topping up a published augment-mode dataset when its reference changes.

A scheduled run over a growing reference should not start over: when the published output was
made by the same recipe (everything that decides samples but the quotas) and only the
reference's content differs, the run generates just what the new reference still needs and adds
it as new shards after the published ones, which stay byte for byte. What it generates:

- the fresh augment quotas of the new reference, less what is already published, where every
  cell still needs at least what is published (the usual case: the reference grew);
- otherwise (the new reference needs fewer synthetic samples in some cell than are published)
  the policy is **keep all**: no published sample is withdrawn, and the run generates the fewest
  samples that make reference + published + new follow the target again (``augment_quotas``
  over reference + published). The surplus per cell is recorded in the version's ``changes``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fairsynth.core.quotas import augment_quotas
from fairsynth.run.ledger import fingerprint
from fairsynth.run.publish import intact_version
from fairsynth.run.spec import RunSpec, TopUp

KEEP_ALL = (
    "keep-all: published samples are never withdrawn; where the reference now needs fewer in a "
    "cell, the other cells are topped up so that reference + synthetic follows the target"
)


def plan_topup(run: RunSpec) -> RunSpec | None:
    """The run that tops up the output's latest publication to this reference, or None when
    this run must start over (not augment mode, nothing complete and intact published, another
    recipe) or has nothing to add to (the same reference)."""
    if run.reference_id is None or run.reference_counts is None or len(run.jobs) != 1:
        return None
    found = intact_version(run.output_dir)
    if found is None:
        return None
    parent, manifest = found
    if parent.get("reference") is None or parent.get("reference_counts") is None:
        return None  # not an augment publication (standalone): it is not topped up
    if parent.get("recipe") != run.recipe_id or (
        parent["reference"] == run.reference_id
        and tuple(parent["reference_counts"]) == tuple(run.reference_counts)
    ):
        return None
    job = run.jobs[0]
    published = np.asarray(parent["accepted"], dtype=np.int64)
    fresh = np.asarray(job.quotas, dtype=np.int64)  # what a new run over this reference makes
    reference = np.asarray(run.reference_counts, dtype=np.int64)
    if (published <= fresh).all():
        missing = fresh - published
    else:
        missing = augment_quotas(job.target.probs, reference + published)
    changes = {
        "kind": "top-up",
        "reference": {"from": parent.get("reference"), "to": run.reference_id},
        "reference_counts": {"from": parent.get("reference_counts"), "to": reference.tolist()},
        "fresh_quotas": fresh.tolist(),
        "surplus": np.maximum(published - fresh, 0).tolist(),
        "policy": KEEP_ALL,
    }
    fp = {
        **run.fingerprint,
        "quotas": [missing.tolist()],
        "parent": parent["fingerprint"],
        "reference": run.reference_id,
    }
    return dataclasses.replace(
        run,
        jobs=(dataclasses.replace(job, quotas=missing),),
        fingerprint=fp,
        fingerprint_id=fingerprint(fp),
        topup=TopUp(parent=parent, parent_manifest=manifest, changes=changes),
    )
