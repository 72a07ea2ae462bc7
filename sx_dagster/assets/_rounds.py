"""Iterative rounds (issue 26): round r+1 samples its rationales and explores its pits with
round r's Self-Explore model, builds new pairs and trains again.

Why round copies of the assets, and not a second partition dimension: round r+1's sampling
depends on round r's ``trained_model``, a different asset downstream of round r's sampling.
Dagster keeps the asset graph acyclic; a partition may depend on another partition of the
*same* asset only along a time dimension (``Asset "x" depends on itself. Assets can only depend
on themselves if they are: (a) time-partitioned ... (b) multipartitioned, with one time
dimension``, Dagster 1.13). So round r >= 2 is a copy of the per-round assets under the key
prefix ``round_<r>/`` (group ``round_<r>``), still partitioned by experiment: Dagster orders a
backfill of rounds 1..3 by their dependencies, shows round 2 stale when round 1 changes, and
round 1 keeps today's keys, rows and fingerprints.

A round-r stage's rows live in the DuckDB schema ``round_<r>`` (same tables, with a ``round``
column), so every query of the stage code reads its own round without a round filter, and
round 1's rows (schema ``main``) never see another round's.
"""

from __future__ import annotations

import dagster as dg

# The stages that run once per round: sampling through DPO and evaluation. The task, the base
# model and SFT are shared by all rounds; step labels, the PRM and best-of-N stay round 1's.
PER_ROUND = (
    "sampled_rationales",
    "rft_checkpoint",
    "outcome_pairs",
    "first_pit_labels",
    "dpo_pairs",
    "trained_model",
    "outcome_dpo_model",
    "eval_scores",
)
# (asset, input) pairs that name the round's policy: the sampler, the explorer and DPO's start.
# In round r >= 2 they read round r-1's Self-Explore model instead.
POLICY_INPUTS = {
    ("sampled_rationales", "sft_checkpoint"),
    ("first_pit_labels", "rft_checkpoint"),
    ("trained_model", "rft_checkpoint"),
    ("outcome_dpo_model", "rft_checkpoint"),
}
DPO_ASSETS = ("trained_model", "outcome_dpo_model")
# The rounds.* fields a round-r >= 2 stage reads (fingerprinted); round 1 reads none of them.
# The other stages follow the round's policy through their inputs' fingerprints.
ROUND_READS = {a: ("rounds.train_from", "rounds.pairs") for a in DPO_ASSETS}
PREFIX = "round_"


def round_key(name: str, r: int) -> str:
    """The asset key (as a string) of ``name`` in round ``r``: round 1 and shared assets keep their name."""
    return name if r == 1 or name not in PER_ROUND else f"{PREFIX}{r}/{name}"


def round_of(key: str) -> int:
    """The round of an asset key string (``round_2/trained_model`` -> 2; any other key -> 1)."""
    head, sep, _ = key.partition("/")
    if sep and head.startswith(PREFIX) and head[len(PREFIX) :].isdigit():
        return int(head[len(PREFIX) :])
    return 1


def logical_name(key: str) -> str:
    """The round-1 name of an asset key string."""
    return key.partition("/")[2] if round_of(key) > 1 else key


def previous_model(r: int) -> str:
    """Round r-1's Self-Explore model: round r's sampler and explorer."""
    return round_key("trained_model", r - 1)


def declared_input(asset: str, name: str, r: int) -> str:
    """The key round ``r``'s ``asset`` depends on, in Dagster, for its round-1 input ``name``."""
    if r > 1 and (asset, name) in POLICY_INPUTS:
        return previous_model(r)
    return round_key(name, r)


def resolved_input(asset: str, name: str, r: int, train_from: str) -> str:
    """The key whose checkpoint and lineage round ``r``'s ``asset`` reads for input ``name``:
    the declared one, except DPO's start under ``rounds.train_from`` rft (the round's own RFT
    model) or sft. Both are upstream of the round's pairs, so Dagster's order holds for them too."""
    if r > 1 and asset in DPO_ASSETS and name == "rft_checkpoint":
        return {"previous": previous_model(r), "rft": round_key("rft_checkpoint", r), "sft": "sft_checkpoint"}[train_from]
    return declared_input(asset, name, r)


def input_names(asset: str, declared: list[str], r: int) -> dict[str, str]:
    """Round-1 input name -> declared key, from the declared upstream keys of round ``r``'s ``asset``."""
    policy = [n for (a, n) in POLICY_INPUTS if a == asset]
    return {(policy[0] if r > 1 and policy and k == previous_model(r) else logical_name(k)): k for k in declared}


def schema(r: int) -> str:
    """The DuckDB schema that holds round ``r``'s rows."""
    return "main" if r == 1 else f"{PREFIX}{r}"


def copy_for_round(asset: dg.AssetsDefinition, r: int) -> dg.AssetsDefinition:
    """Round ``r``'s copy of a round-1 per-round asset: key ``round_<r>/<name>``, its per-round
    inputs those of round r, its policy input round r-1's Self-Explore model, group ``round_<r>``,
    the same code (and code version). The op is renamed: Dagster needs one name per node."""
    name = asset.key.to_user_string()
    deps = [k.to_user_string() for k in asset.asset_deps[asset.key]]
    swap = {dg.AssetKey.from_user_string(d): dg.AssetKey.from_user_string(declared_input(name, d, r)) for d in deps}
    swap[asset.key] = dg.AssetKey.from_user_string(round_key(name, r))
    copy = asset.with_attributes(asset_key_replacements=swap)
    copy = copy.map_asset_specs(lambda spec: spec.replace_attributes(group_name=f"{PREFIX}{r}"))
    node = copy.node_def.with_replaced_properties(name=f"{PREFIX}{r}__{copy.node_def.name}")
    return dg.AssetsDefinition.dagster_internal_init(**{**copy.get_attributes_dict(), "node_def": node})


def round_assets(per_round: list[dg.AssetsDefinition], rounds: int) -> list[dg.AssetsDefinition]:
    """Rounds 2..``rounds`` of the per-round assets."""
    return [copy_for_round(a, r) for r in range(2, rounds + 1) for a in per_round]
