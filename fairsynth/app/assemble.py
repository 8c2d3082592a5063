"""One assembly of model, ADP and verifier for every entry point that takes params."""

from __future__ import annotations

from fairsynth.app.config import Params
from fairsynth.app.resolve import prompt_spec
from fairsynth.app.runspec import producer_recipe
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.run.executors import build_producer
from fairsynth.run.produce import BatchProducer


def assemble(params: Params, guidance: GuidanceConfig | None = None) -> BatchProducer:
    """The model (one backend per job, bound to its prompt), ADP and verifier of these params,
    loaded as a run loads them: every entry point that takes params builds them here."""
    jobs = params.jobs()
    prompts = tuple(prompt_spec(prompt) for prompt, _, _ in jobs)
    return build_producer(producer_recipe(params, jobs[0][1].space, prompts, guidance))
