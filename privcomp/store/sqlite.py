"""SQLite job store in WAL mode (layer: store).

One table ``jobs`` of :class:`StoredJob` rows (spec and released result as JSON strings; the
store knows no domain types — :mod:`privcomp.services.jobstore` converts).
WAL mode lets the coordinator's readers run while a writer commits, and survives a SIGKILL
(``PRAGMA integrity_check`` stays ``ok``). On start-up :meth:`SqliteJobStore.fail_running`
marks every job left PENDING or RUNNING by a previous process as FAILED("coordinator
restarted"), so no job is ever stuck (T23).

Idempotency keys are bound to the spec: next to the key the store keeps ``spec_sha256``, the
SHA-256 of the canonical spec JSON, and a reuse of an (owner, key) pair with another spec is
refused (:class:`~privcomp.errors.IdempotencyConflictError`) instead of silently returning the
earlier job. A database written before this column existed is migrated on open (column added,
digests computed from the stored specs).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from privcomp.errors import ConfigurationError, IdempotencyConflictError, JobNotFoundError

ACTIVE_STATES = ("PENDING", "RUNNING")
FAILED_STATE = "FAILED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    failing_party TEXT NOT NULL DEFAULT '',
    phase TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result TEXT,
    spec_sha256 TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(owner, idempotency_key)
    WHERE idempotency_key != '';
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredJob:
    """One row of the ``jobs`` table (the store knows no domain types; services convert)."""

    job_id: str
    owner: str
    idempotency_key: str
    spec_json: str
    state: str
    reason: str = ""
    failing_party: str = ""
    phase: str = ""
    progress: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    result_json: str | None = None
    spec_sha256: str = ""


def spec_digest(spec_json: str) -> str:
    """SHA-256 (hex) of a spec's canonical JSON text."""
    return hashlib.sha256(spec_json.encode()).hexdigest()


def _row(row: sqlite3.Row) -> StoredJob:
    return StoredJob(
        job_id=row["job_id"],
        owner=row["owner"],
        idempotency_key=row["idempotency_key"],
        spec_json=row["spec"],
        state=row["state"],
        reason=row["reason"],
        failing_party=row["failing_party"],
        phase=row["phase"],
        progress=row["progress"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        result_json=row["result"],
        spec_sha256=row["spec_sha256"],
    )


class SqliteJobStore:
    """Persistent job store.

    Parameters
    ----------
    path:
        Database file (``":memory:"`` for tests).
    """

    def __init__(self, path: str | Path) -> None:
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open job store {path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add ``spec_sha256`` to a database created before it existed and fill it in."""
        cols = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)").fetchall()}
        if "spec_sha256" in cols:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE jobs ADD COLUMN spec_sha256 TEXT NOT NULL DEFAULT ''")
            rows = self._db.execute("SELECT job_id, spec FROM jobs").fetchall()
            self._db.executemany(
                "UPDATE jobs SET spec_sha256=? WHERE job_id=?",
                [(spec_digest(r["spec"]), r["job_id"]) for r in rows],
            )
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Checkpoint the WAL and close."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` is ``ok``."""
        with self._lock:
            return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def insert(self, rec: StoredJob) -> StoredJob:
        """Insert a new job; with an existing (owner, idempotency key) return that job instead.

        Raises
        ------
        IdempotencyConflictError
            The owner already used the key for a job with a different spec.
        """
        digest = spec_digest(rec.spec_json)
        with self._lock:
            if rec.idempotency_key:
                row = self._db.execute(
                    "SELECT * FROM jobs WHERE owner=? AND idempotency_key=?",
                    (rec.owner, rec.idempotency_key),
                ).fetchone()
                if row is not None:
                    if row["spec_sha256"] != digest:
                        # The message names neither spec: only that the key was reused.
                        raise IdempotencyConflictError(
                            "this idempotency key was already used by the same requester for "
                            "a different job spec; use a new key for a new job"
                        )
                    return _row(row)
            self._db.execute(
                "INSERT INTO jobs (job_id, owner, idempotency_key, spec, state, reason, "
                "failing_party, phase, progress, created_at, updated_at, result, spec_sha256) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL,?)",
                (
                    rec.job_id,
                    rec.owner,
                    rec.idempotency_key,
                    rec.spec_json,
                    rec.state,
                    rec.reason,
                    rec.failing_party,
                    rec.phase,
                    rec.progress,
                    rec.created_at,
                    rec.updated_at,
                    digest,
                ),
            )
            return replace(rec, spec_sha256=digest)

    def update(self, rec: StoredJob) -> None:
        """Persist state, reason, party, phase, progress and result of ``rec``."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET state=?, reason=?, failing_party=?, phase=?, progress=?, "
                "updated_at=?, result=? WHERE job_id=?",
                (
                    rec.state,
                    rec.reason,
                    rec.failing_party,
                    rec.phase,
                    rec.progress,
                    rec.updated_at,
                    rec.result_json,
                    rec.job_id,
                ),
            )
            if cur.rowcount != 1:
                raise JobNotFoundError(f"job {rec.job_id} not found")

    def get(self, job_id: str) -> StoredJob:
        """Load one job (JobNotFoundError if absent)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"job {job_id} not found")
        return _row(row)

    def list(self, owner: str | None = None, limit: int = 100) -> list[StoredJob]:
        """Most recent jobs first (of ``owner`` if given)."""
        with self._lock:
            if owner is None:
                rows = self._db.execute(
                    "SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs WHERE owner=? ORDER BY created_at DESC LIMIT ?",
                    (owner, limit),
                ).fetchall()
        return [_row(r) for r in rows]

    def fail_running(self, reason: str = "coordinator restarted") -> int:
        """Mark every PENDING or RUNNING job FAILED; returns how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET state=?, reason=?, phase=CASE WHEN phase='' THEN 'unknown' "
                "ELSE phase END, updated_at=? WHERE state IN (?, ?)",
                (FAILED_STATE, reason, time.time(), *ACTIVE_STATES),
            )
            return int(cur.rowcount)
