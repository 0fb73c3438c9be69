"""Job records ⇄ SQLite rows (layer: services; store and jobs do not know each other)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privcomp.jobs.model import JobRecord, JobSpec, JobState
from privcomp.store.sqlite import SqliteJobStore, StoredJob


def _spec_json(spec: JobSpec) -> str:
    return json.dumps(
        {
            "kind": spec.kind,
            "parties": list(spec.parties),
            "dataset": spec.dataset,
            "params": spec.params,
            "triple_source": spec.triple_source,
            "deadline_s": spec.deadline_s,
        },
        sort_keys=True,
    )


def to_stored(rec: JobRecord) -> StoredJob:
    """JobRecord → row."""
    result = None
    if rec.result is not None:
        result = json.dumps({k: [list(v[0]), list(v[1])] for k, v in rec.result.items()})
    return StoredJob(
        job_id=rec.job_id,
        owner=rec.owner,
        idempotency_key=rec.idempotency_key,
        spec_json=_spec_json(rec.spec),
        state=rec.state.value,
        reason=rec.reason,
        failing_party=rec.failing_party,
        phase=rec.phase,
        progress=rec.progress,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        result_json=result,
    )


def from_stored(row: StoredJob) -> JobRecord:
    """Row → JobRecord."""
    result = None
    if row.result_json:
        raw: dict[str, Any] = json.loads(row.result_json)
        result = {k: (tuple(v[0]), tuple(v[1])) for k, v in raw.items()}
    return JobRecord(
        job_id=row.job_id,
        spec=JobSpec.from_dict(json.loads(row.spec_json)),
        owner=row.owner,
        state=JobState(row.state),
        reason=row.reason,
        failing_party=row.failing_party,
        phase=row.phase,
        progress=row.progress,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
        updated_at=row.updated_at,
        result=result,
    )


class JobRepository:
    """The coordinator's view of the SQLite store in domain types.

    Parameters
    ----------
    path:
        SQLite file (WAL mode) or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.db = SqliteJobStore(path)

    def insert(self, rec: JobRecord) -> JobRecord:
        """Insert (or return the job with the same owner, idempotency key and spec).

        Raises
        ------
        IdempotencyConflictError
            The owner already used the key for a different spec.
        """
        return from_stored(self.db.insert(to_stored(rec)))

    def update(self, rec: JobRecord) -> None:
        """Persist a changed record."""
        self.db.update(to_stored(rec))

    def get(self, job_id: str) -> JobRecord:
        """Load one job."""
        return from_stored(self.db.get(job_id))

    def list(self, owner: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Most recent first."""
        return [from_stored(r) for r in self.db.list(owner, limit)]

    def fail_running(self, reason: str = "coordinator restarted") -> int:
        """Fail every job a previous process left PENDING or RUNNING."""
        return self.db.fail_running(reason)

    def close(self) -> None:
        """Checkpoint and close."""
        self.db.close()
