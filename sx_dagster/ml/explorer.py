"""The explorer's ``generate`` for :func:`sx_dagster.core.explore.explore`: a generation backend
sampling at the experiment's exploration settings."""

from __future__ import annotations

from collections.abc import Sequence

from sx_dagster.core.explore import Generate
from sx_dagster.ml.generation import Generation, GenerationBackend, SamplingParams


def explorer_generate(backend: GenerationBackend, settings, seed: int, task: str) -> Generate:
    """``settings``: the experiment's ``explore`` section (temperature, top_p, max_new_tokens)."""

    def generate(prompts: Sequence[str], n: int, first_sample: Sequence[int]) -> list[list[Generation]]:
        params = SamplingParams(n, settings.temperature, settings.top_p, settings.max_new_tokens, seed, task)
        return backend.generate(prompts, params, first_sample)

    return generate
