"""The DuckDB lineage store: every row the pipeline makes, each with its experiment, the
Dagster run id and the id of the row it came from.

One writer per DuckDB file: connections are opened per write transaction and closed at
once. Writes replace a partition's (or a chunk's) rows in one transaction, so a re-run
never duplicates rows and a crash never leaves half a chunk.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from sx_dagster.paths import data_dir

# Every table has experiment, run_id and (but for the roots) parent_id.
SCHEMA: dict[str, str] = {
    "questions": """experiment VARCHAR, id VARCHAR, split VARCHAR, question VARCHAR, rationale VARCHAR,
        answer VARCHAR, meta VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "checkpoints": """experiment VARCHAR, id VARCHAR, name VARCHAR, path VARCHAR, hash VARCHAR,
        parent_id VARCHAR, run_id VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp""",
    "samples": """experiment VARCHAR, id VARCHAR, question_id VARCHAR, idx INTEGER, text VARCHAR, pred VARCHAR,
        correct BOOLEAN, annotations_ok BOOLEAN, n_tokens INTEGER, chunk INTEGER, checkpoint_id VARCHAR,
        seed BIGINT, run_id VARCHAR, parent_id VARCHAR""",
    "rft_data": """experiment VARCHAR, id VARCHAR, question_id VARCHAR, sample_id VARCHAR, source VARCHAR,
        prompt VARCHAR, completion VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "outcome_pairs": """experiment VARCHAR, id VARCHAR, question_id VARCHAR, chosen_sample_id VARCHAR,
        rejected_sample_id VARCHAR, prompt VARCHAR, chosen VARCHAR, rejected VARCHAR, prompt_tokens INTEGER,
        chosen_tokens INTEGER, rejected_tokens INTEGER, truncated BOOLEAN, run_id VARCHAR, parent_id VARCHAR""",
    "explorations": """experiment VARCHAR, id VARCHAR, pair_id VARCHAR, sample_id VARCHAR, step INTEGER, idx INTEGER,
        text VARCHAR, pred VARCHAR, correct BOOLEAN, n_tokens INTEGER, chunk INTEGER, checkpoint_id VARCHAR,
        seed BIGINT, run_id VARCHAR, parent_id VARCHAR""",
    "pits": """experiment VARCHAR, pair_id VARCHAR, sample_id VARCHAR, question_id VARCHAR, n_steps INTEGER,
        explored_steps INTEGER, pit INTEGER, true_first_error INTEGER, strategy VARCHAR, k INTEGER, proven INTEGER,
        completions INTEGER, generated_tokens BIGINT, prompt_tokens BIGINT, prefill_tokens BIGINT, chunk INTEGER,
        checkpoint_id VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "dpo_pairs": """experiment VARCHAR, id VARCHAR, pair_id VARCHAR, question_id VARCHAR, pit INTEGER, prompt VARCHAR,
        chosen VARCHAR, rejected VARCHAR, chosen_source VARCHAR, chosen_id VARCHAR, prompt_tokens INTEGER,
        chosen_tokens INTEGER, rejected_tokens INTEGER, truncated BOOLEAN, run_id VARCHAR, parent_id VARCHAR""",
    "eval_predictions": """experiment VARCHAR, model VARCHAR, question_id VARCHAR, text VARCHAR, pred VARCHAR,
        gold VARCHAR, correct BOOLEAN, checkpoint_id VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "eval_scores": """experiment VARCHAR, model VARCHAR, n INTEGER, n_correct INTEGER, accuracy DOUBLE,
        checkpoint_id VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "chunks": """experiment VARCHAR, asset VARCHAR, chunk INTEGER, fingerprint VARCHAR, n_rows INTEGER,
        run_id VARCHAR, committed_at TIMESTAMP DEFAULT current_timestamp""",
    "lineage": """experiment VARCHAR, asset VARCHAR, run_id VARCHAR, code_version VARCHAR, fingerprint VARCHAR,
        config VARCHAR, input_versions VARCHAR, checkpoint_path VARCHAR, checkpoint_hash VARCHAR,
        metadata VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp""",
}


_READY: set[str] = set()  # databases whose schema this process has already checked


class LineageStore(dg.ConfigurableResource):
    """Rows and lineage in one DuckDB file (default ``$SX_DATA_DIR/sx.duckdb``)."""

    database: str | None = Field(None, description="DuckDB file; None = $SX_DATA_DIR/sx.duckdb")

    def path(self) -> Path:
        return Path(self.database) if self.database else data_dir() / "sx.duckdb"

    @contextlib.contextmanager
    def connect(self) -> Iterator:
        """A short-lived connection (dagster-duckdb retries while another writer holds the file)."""
        p = self.path()
        p.parent.mkdir(parents=True, exist_ok=True)
        with DuckDBResource(database=str(p)).get_connection() as conn:
            yield conn

    def ensure_schema(self) -> None:
        key = str(self.path().resolve())
        if key in _READY and self.path().exists():
            return
        with self.connect() as conn:
            for table, cols in SCHEMA.items():
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
                # A database from an older version gains the newer (nullable) columns in place.
                for col in cols.split(","):
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col.strip()}")
        _READY.add(key)

    @staticmethod
    def _insert(conn, table: str, df: pd.DataFrame) -> None:
        if len(df):
            conn.register("_rows", df)
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
            conn.unregister("_rows")

    def replace_partition(self, experiment: str, writes: dict[str, pd.DataFrame], where: str = "", params: Sequence = ()) -> None:
        """Replace ``experiment``'s rows of each table (optionally only those matching the SQL
        condition ``where`` with bound ``params``) with the given frames, in one transaction."""
        self.ensure_schema()
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                for table, df in writes.items():
                    conn.execute(f"DELETE FROM {table} WHERE experiment = ? {where}", [experiment, *params])
                    self._insert(conn, table, df)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def commit_chunk(self, experiment: str, asset: str, chunk: int, fingerprint: str, run_id: str, writes: dict[str, pd.DataFrame]) -> None:
        """Rows of one chunk and its commit marker, in one transaction (resume unit)."""
        self.ensure_schema()
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                for table, df in writes.items():
                    conn.execute(f"DELETE FROM {table} WHERE experiment = ? AND chunk = ?", [experiment, chunk])
                    self._insert(conn, table, df)
                conn.execute("DELETE FROM chunks WHERE experiment = ? AND asset = ? AND chunk = ?", [experiment, asset, chunk])
                n = sum(len(df) for df in writes.values())
                conn.execute(
                    "INSERT INTO chunks (experiment, asset, chunk, fingerprint, n_rows, run_id) VALUES (?, ?, ?, ?, ?, ?)",
                    [experiment, asset, chunk, fingerprint, n, run_id],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def committed_chunks(self, experiment: str, asset: str, fingerprint: str, tables: Sequence[str]) -> set[int]:
        """Chunks already committed for this fingerprint; rows of any other fingerprint
        (changed config, code or inputs) are deleted, so a resume never mixes them."""
        self.ensure_schema()
        with self.connect() as conn:
            stale = conn.execute(
                "SELECT count(*) FROM chunks WHERE experiment = ? AND asset = ? AND fingerprint <> ?",
                [experiment, asset, fingerprint],
            ).fetchone()[0]
            if stale:
                conn.execute("BEGIN TRANSACTION")
                for table in tables:
                    conn.execute(f"DELETE FROM {table} WHERE experiment = ?", [experiment])
                conn.execute("DELETE FROM chunks WHERE experiment = ? AND asset = ?", [experiment, asset])
                conn.execute("COMMIT")
                return set()
            rows = conn.execute(
                "SELECT chunk FROM chunks WHERE experiment = ? AND asset = ? AND fingerprint = ?",
                [experiment, asset, fingerprint],
            ).fetchall()
            done = {r[0] for r in rows}
            # Rows of chunks with no marker are leftovers of a crash mid-write: drop them.
            for table in tables:
                conn.execute(
                    f"DELETE FROM {table} WHERE experiment = ? AND chunk NOT IN (SELECT chunk FROM chunks "
                    "WHERE experiment = ? AND asset = ?)",
                    [experiment, experiment, asset],
                )
            return done

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        self.ensure_schema()
        with self.connect() as conn:
            return conn.execute(sql, list(params or [])).df()

    def record_lineage(self, experiment: str, asset: str, row: dict) -> None:
        """One lineage row per materialization; the newest row per (experiment, asset) is current."""
        self.ensure_schema()
        values = {k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
        cols = ["experiment", "asset", *values]
        with self.connect() as conn:
            conn.execute(
                f"INSERT INTO lineage ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [experiment, asset, *values.values()],
            )

    def latest_lineage(self, experiment: str, asset: str) -> dict | None:
        df = self.query("SELECT * FROM lineage WHERE experiment = ? AND asset = ? ORDER BY created_at DESC LIMIT 1", [experiment, asset])
        return None if df.empty else df.iloc[0].to_dict()
