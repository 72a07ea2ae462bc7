"""Model checkpoints: directories of safetensors, written to a temporary path and renamed
when complete, so a crash never leaves a half-written checkpoint under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from sx_dagster.paths import data_dir

_HASHED = (".safetensors", ".json", ".model", ".txt")
_PARTIAL_HASH_ABOVE = 1 << 30  # beyond 1 GiB hash size + head + tail: 7B shards hash in seconds


def checkpoint_hash(path: str | Path) -> str:
    """sha256 over the checkpoint's weight, config and tokenizer files (names and bytes)."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _HASHED):
        h.update(str(f.relative_to(root)).encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            if size <= _PARTIAL_HASH_ABOVE:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            else:
                h.update(fh.read(64 << 20))
                fh.seek(-(64 << 20), 2)
                h.update(fh.read())
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
        tmp = final.parent / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = final.parent / f".old-{name}-{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
