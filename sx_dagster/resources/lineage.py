"""The DuckDB lineage store: every row the pipeline makes, each with its experiment, the
Dagster run id and the id of the row it came from.

One writer per DuckDB file: connections are opened per write transaction and closed at
once. Writes replace a partition's (or a chunk's) rows in one transaction, so a re-run
never duplicates rows and a crash never leaves half a chunk.

Nothing is lost to a failed re-run: a stage's rows replace the old ones in the same
transaction as its lineage row, and the chunks of a long stage are staged apart (tables
``<table>_staged``, keyed by fingerprint) until the last one is in, then promoted in one
transaction. Until then the old rows and the old lineage stay current.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

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
        gold VARCHAR, correct BOOLEAN, checkpoint_id VARCHAR, run_id VARCHAR, parent_id VARCHAR, steps_right BOOLEAN,
        split VARCHAR, n_tokens INTEGER""",
    "eval_scores": """experiment VARCHAR, model VARCHAR, n INTEGER, n_correct INTEGER, accuracy DOUBLE,
        checkpoint_id VARCHAR, run_id VARCHAR, parent_id VARCHAR, n_steps_right INTEGER, split VARCHAR""",
    "step_labels": """experiment VARCHAR, id VARCHAR, sample_id VARCHAR, question_id VARCHAR, pair_id VARCHAR, kind VARCHAR,
        step INTEGER, text VARCHAR, good BOOLEAN, source VARCHAR, soft DOUBLE, evidence_ids VARCHAR, true_first_error INTEGER,
        split VARCHAR, checkpoint_id VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "prm_examples": """experiment VARCHAR, id VARCHAR, sample_id VARCHAR, question_id VARCHAR, prompt VARCHAR,
        completions VARCHAR, labels VARCHAR, split VARCHAR, true_first_error INTEGER, run_id VARCHAR, parent_id VARCHAR""",
    "best_of_n_samples": """experiment VARCHAR, model VARCHAR, question_id VARCHAR, idx INTEGER, text VARCHAR, pred VARCHAR,
        correct BOOLEAN, true_first_error INTEGER, checkpoint_id VARCHAR, step_scores VARCHAR, min_score DOUBLE,
        last_score DOUBLE, first_low_step INTEGER, prm_checkpoint_id VARCHAR, split VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "best_of_n_scores": """experiment VARCHAR, model VARCHAR, rule VARCHAR, n INTEGER, n_correct INTEGER, accuracy DOUBLE,
        best_of INTEGER, split VARCHAR, run_id VARCHAR, parent_id VARCHAR""",
    "chunks": """experiment VARCHAR, asset VARCHAR, chunk INTEGER, fingerprint VARCHAR, n_rows INTEGER,
        run_id VARCHAR, committed_at TIMESTAMP DEFAULT current_timestamp""",
    "lineage": """experiment VARCHAR, asset VARCHAR, run_id VARCHAR, code_version VARCHAR, fingerprint VARCHAR,
        config VARCHAR, input_versions VARCHAR, checkpoint_path VARCHAR, checkpoint_hash VARCHAR,
        metadata VARCHAR, status VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp""",
}
# Chunked tables: rows of an unfinished run wait in <table>_staged, keyed by the run's fingerprint.
STAGED = ("samples", "explorations", "pits")
SCHEMA.update({f"{t}_staged": SCHEMA[t] + ", fingerprint VARCHAR" for t in STAGED})

# Tables with a row per round (issue 26): round r >= 2 keeps its rows in the DuckDB schema
# round_<r> (same tables); every row also carries its round in a ``round`` column. The task,
# checkpoints, chunk markers and lineage rows stay in main (asset names carry the round there).
ROUND_TABLES = (
    "samples",
    "rft_data",
    "outcome_pairs",
    "explorations",
    "pits",
    "dpo_pairs",
    "eval_predictions",
    "eval_scores",
    *(f"{t}_staged" for t in STAGED),
)

# lineage.status: DONE, the stage finished (rows, checkpoint and metadata current; NULL in
# databases of older versions means the same); PROMOTED, a chunked stage's rows were promoted
# but the stage did not finish: its rows are those of this fingerprint, its metadata is missing.
DONE, PROMOTED = "done", "promoted"


_READY: set[str] = set()  # databases whose schema this process has already checked


class LineageStoreError(RuntimeError):
    """The DuckDB file cannot be opened (damaged, truncated, not DuckDB)."""


class LineageStore(dg.ConfigurableResource):
    """Rows and lineage in one DuckDB file (default ``$SX_DATA_DIR/sx.duckdb``)."""

    database: str | None = Field(None, description="DuckDB file; None = $SX_DATA_DIR/sx.duckdb")
    _round: int = PrivateAttr(1)

    def for_round(self, r: int) -> LineageStore:
        """This store as round ``r``'s stages see it: the round's tables (schema ``round_<r>``)
        first, then main's; what they write lands in their round. Round 1 is the store itself."""
        if r == self._round:
            return self
        store = LineageStore(database=self.database)
        store._round = r
        return store

    @property
    def round(self) -> int:
        return self._round

    def path(self) -> Path:
        return Path(self.database) if self.database else data_dir() / "sx.duckdb"

    @contextlib.contextmanager
    def connect(self) -> Iterator:
        """A short-lived connection. Only a file held by another writer is waited for (dagster-duckdb
        retries opening it); any other failure to open is a damaged file, reported at once, not
        after that ~100 s of retries."""
        p = self.path()
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                conn = duckdb.connect(str(p))
            except duckdb.Error as e:
                if "lock" not in str(e).lower():
                    raise self._damaged(p, e) from e  # truncated, or not a DuckDB file at all
                conn = None  # another writer has it: wait as dagster-duckdb does
            if conn is None:
                try:
                    conn = stack.enter_context(DuckDBResource(database=str(p)).get_connection())
                except duckdb.IOException as e:
                    if "lock" in str(e).lower():
                        raise  # still held after dagster-duckdb's wait: transient, the step retries
                    raise self._damaged(p, e) from e
            else:
                stack.callback(conn.close)
            if self._round > 1:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS round_{self._round}")
                conn.execute(f"SET search_path = 'round_{self._round},main'")
            yield conn

    @staticmethod
    def _damaged(p: Path, e: Exception) -> LineageStoreError:
        """A truncated or foreign file: say which file and what to do (the step is not retried)."""
        return LineageStoreError(
            f"cannot open the lineage store {p} ({e}). Restore it from a backup, or move it aside "
            f"(mv '{p}' '{p}.damaged') to start over: every stage then runs again"
        )

    def ensure_schema(self) -> None:
        key = f"{self.path().resolve()}#{self._round}"
        if key in _READY and self.path().exists():
            return
        with self.connect() as conn:
            for table, cols in SCHEMA.items():
                if table in ROUND_TABLES or table in ("lineage", "checkpoints"):
                    cols += ", round INTEGER DEFAULT 1"  # rows of older versions are round 1's
                conn.execute(f"CREATE TABLE IF NOT EXISTS main.{table} ({cols})")
                # A database from an older version gains the newer (nullable) columns in place.
                for col in cols.split(","):
                    conn.execute(f"ALTER TABLE main.{table} ADD COLUMN IF NOT EXISTS {col.strip()}")
            if self._round > 1:
                for table in ROUND_TABLES:
                    cols = f"{SCHEMA[table]}, round INTEGER DEFAULT {self._round}"
                    conn.execute(f"CREATE TABLE IF NOT EXISTS round_{self._round}.{table} ({cols})")
        _READY.add(key)

    @staticmethod
    def _insert(conn, table: str, df: pd.DataFrame) -> None:
        if len(df):
            conn.register("_rows", df)
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
            conn.unregister("_rows")

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        """A connection inside one transaction: committed on exit, rolled back on any error."""
        self.ensure_schema()
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @classmethod
    def _replace(cls, conn, experiment: str, writes: dict[str, pd.DataFrame], where: str = "", params: Sequence = ()) -> None:
        for table, df in writes.items():
            conn.execute(f"DELETE FROM {table} WHERE experiment = ? {where}", [experiment, *params])
            cls._insert(conn, table, df)

    def commit_chunk(self, experiment: str, asset: str, chunk: int, fingerprint: str, run_id: str, writes: dict[str, pd.DataFrame]) -> None:
        """Rows of one chunk into the staging tables and its commit marker, in one transaction
        (the resume unit). The current rows of the asset are not touched."""
        with self.transaction() as conn:
            for table, df in writes.items():
                _staged_table(table)
                conn.execute(
                    f"DELETE FROM {table}_staged WHERE experiment = ? AND fingerprint = ? AND chunk = ?", [experiment, fingerprint, chunk]
                )
                self._insert(conn, f"{table}_staged", df.assign(fingerprint=fingerprint))
            conn.execute(
                "DELETE FROM chunks WHERE experiment = ? AND asset = ? AND fingerprint = ? AND chunk = ?",
                [experiment, asset, fingerprint, chunk],
            )
            conn.execute(
                "INSERT INTO chunks (experiment, asset, chunk, fingerprint, n_rows, run_id) VALUES (?, ?, ?, ?, ?, ?)",
                [experiment, asset, chunk, fingerprint, sum(len(df) for df in writes.values()), run_id],
            )

    def staged_chunks(self, experiment: str, asset: str, fingerprint: str) -> set[int]:
        """Chunks already staged for this fingerprint. Staged chunks of other fingerprints are
        kept (a reverted config resumes them too) until a run of the asset is promoted."""
        df = self.query("SELECT chunk FROM chunks WHERE experiment = ? AND asset = ? AND fingerprint = ?", [experiment, asset, fingerprint])
        return set(df["chunk"].tolist())

    def promote_chunks(self, experiment: str, asset: str, fingerprint: str, run_id: str, tables: Sequence[str]) -> None:
        """Swap the asset's rows for its staged rows of ``fingerprint`` in one transaction, with a
        lineage row (status PROMOTED) saying whose rows these are until the stage is done."""
        with self.transaction() as conn:
            for table in tables:
                _staged_table(table)
                conn.execute(f"DELETE FROM {table} WHERE experiment = ?", [experiment])
                conn.execute(
                    f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (fingerprint) FROM {table}_staged "
                    "WHERE experiment = ? AND fingerprint = ?",
                    [experiment, fingerprint],
                )
                conn.execute(f"DELETE FROM {table}_staged WHERE experiment = ?", [experiment])
            conn.execute("DELETE FROM chunks WHERE experiment = ? AND asset = ?", [experiment, asset])
            self._insert_lineage(
                conn, experiment, asset, {"run_id": run_id, "fingerprint": fingerprint, "status": PROMOTED, "round": self._round}
            )

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        self.ensure_schema()
        with self.connect() as conn:
            return conn.execute(sql, list(params or [])).df()

    def record_lineage(
        self, experiment: str, asset: str, row: dict, writes: Sequence[tuple[dict[str, pd.DataFrame], str, Sequence]] = ()
    ) -> None:
        """One lineage row per materialization (status DONE unless given), and the stage's row
        replacements ``(frames, where, params)``: each deletes the experiment's rows of a table
        (those matching the SQL ``where`` with bound ``params``) and inserts the frame, all in one
        transaction: the rows change only with the lineage that describes them. The newest row
        per (experiment, asset) is current."""
        with self.transaction() as conn:
            for frames, where, params in writes:
                self._replace(conn, experiment, frames, where, params)
            self._insert_lineage(conn, experiment, asset, {"status": DONE, "round": self._round, **row})

    @staticmethod
    def _insert_lineage(conn, experiment: str, asset: str, row: dict) -> None:
        values = {k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
        cols = ["experiment", "asset", *values]
        conn.execute(
            f"INSERT INTO lineage ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [experiment, asset, *values.values()],
        )

    def latest_lineage(self, experiment: str, asset: str) -> dict | None:
        df = self.query("SELECT * FROM lineage WHERE experiment = ? AND asset = ? ORDER BY created_at DESC LIMIT 1", [experiment, asset])
        return None if df.empty else df.iloc[0].to_dict()


def _staged_table(table: str) -> None:
    if table not in STAGED:
        raise ValueError(f"table {table!r} is not chunked: no staging table (chunked tables: {', '.join(STAGED)})")
