"""How a preference pair's texts are shown to DPO, as the reference trained on them.

The reference (hbin0701/Self-Explore, ``dpo/prepare_dataset.py``) cuts the answer line off a
rejected rationale of more than one line before training, and its trainer
(``dpo/custom_trainer.py``, ``tokenize_row``) appends EOS to the chosen only. The EOS rule is a
tokenization rule and lives in :mod:`sx_dagster.ml.training`; this module holds the text rule.
"""

from __future__ import annotations

from sx_dagster.core.steps import ANSWER_MARKER


def rejected_for_dpo(rejected: str) -> str:
    """The rejected text DPO trains on: a multi-line rejected loses everything from its first
    "The answer is" on (then surrounding whitespace is stripped); a one-line rejected, e.g. a
    single pit step or a bare answer line, is kept as it is. Exactly the reference's rule."""
    if ANSWER_MARKER in rejected and len(rejected.split("\n")) > 1:
        return rejected[: rejected.index(ANSWER_MARKER)].strip()
    return rejected


def pair_for_dpo(row: dict) -> dict:
    """A prompt/chosen/rejected row with the rejected text as DPO sees it (other keys dropped)."""
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": rejected_for_dpo(row["rejected"])}
