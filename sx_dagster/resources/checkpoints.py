"""Model checkpoints: directories of safetensors, written to a temporary path and renamed
when complete, so a crash never leaves a half-written checkpoint under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from sx_dagster.paths import data_dir

_PARTIAL_HASH_ABOVE = 1 << 30  # beyond 1 GiB hash size + head + tail: 7B shards hash in seconds
# sha256 of a file's bytes by (path, size, mtime_ns): an unchanged file is hashed once per process.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path, partial_above: int | None = None) -> str:
    """sha256 of a file's bytes (files over ``partial_above`` bytes: size, first and last
    64 MiB). The digest is of the content only; size and mtime only key the cache, so a
    touched file keeps its digest and an edited one (new size or mtime) is hashed again."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with p.open("rb") as fh:
        if partial_above is None or st.st_size <= partial_above:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(str(st.st_size).encode())
            h.update(fh.read(64 << 20))
            fh.seek(-(64 << 20), os.SEEK_END)
            h.update(fh.read())
    _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


MISSING, CHANGED = "missing", "changed"


def checkpoint_problem(path: str | Path, recorded_hash: str) -> str | None:
    """``MISSING``, ``CHANGED`` (its bytes differ from ``recorded_hash``) or None: the one test of
    whether a recorded checkpoint is still what its lineage row says (the cheap re-run, the watch)."""
    if not Path(path).exists():
        return MISSING
    return None if checkpoint_hash(path) == recorded_hash else CHANGED


def checkpoint_hash(path: str | Path) -> str:
    """sha256 over every file of the checkpoint (relative names and bytes): weights in any
    format (.safetensors, .bin, .pt), config, tokenizer and code (.py). Hidden directories
    are left out: ``.cache/`` of ``huggingface-cli download`` holds download bookkeeping."""
    h = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parent.parts))
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(file_digest(f, _PARTIAL_HASH_ABOVE).encode())
    return h.hexdigest()


class CheckpointStore(dg.ConfigurableResource):
    """Local checkpoint directories under ``root`` (default ``<data dir>/checkpoints``)."""

    root: str | None = Field(None, description="directory for checkpoints; None = $SX_DATA_DIR/checkpoints")

    def base(self) -> Path:
        return Path(self.root) if self.root else data_dir() / "checkpoints"

    def path(self, experiment: str, name: str) -> Path:
        return self.base() / experiment / name

    @contextlib.contextmanager
    def writing(self, experiment: str, name: str) -> Iterator[Path]:
        """Yield a fresh temporary directory; on success it replaces ``path(experiment, name)``."""
        final = self.path(experiment, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
