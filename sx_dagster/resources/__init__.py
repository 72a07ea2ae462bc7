"""Dagster resources: accelerator, generator backend, checkpoint store, lineage store."""

from sx_dagster.resources.accelerator import AcceleratorResource
from sx_dagster.resources.checkpoints import CheckpointStore
from sx_dagster.resources.generator import GeneratorResource
from sx_dagster.resources.lineage import LineageStore

__all__ = ["AcceleratorResource", "CheckpointStore", "GeneratorResource", "LineageStore"]
