"""Job model and state machine (layer: jobs; pure Python, no gRPC).

States: ``PENDING → RUNNING → SUCCEEDED | FAILED | CANCELLED`` (and ``PENDING → FAILED |
CANCELLED``). Terminal states never change. A failure records a reason, the failing party and
the protocol phase.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from privcomp.errors import ConfigurationError, JobStateError

DEFAULT_DEADLINE_S = 120.0
MAX_DEADLINE_S = 24 * 3600.0
TRIPLE_SOURCES = ("he", "dealer")


class JobState(enum.Enum):
    """Lifecycle state of a job."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True for SUCCEEDED, FAILED and CANCELLED."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """What to compute: a registered kind plus parameters (never code).

    Parameters
    ----------
    kind:
        Registered job kind (see :mod:`privcomp.jobs.kinds`).
    parties:
        Participating parties, in protocol order.
    dataset:
        Dataset name; each party maps it to its own file.
    params:
        Kind-specific parameters (JSON-compatible), validated by the kind.
    triple_source:
        ``"he"`` (default: Paillier-generated, no third party) or ``"dealer"`` (explicit trusted
        helper party, named in ``params["dealer"]``).
    deadline_s:
        Global deadline of the job.
    """

    kind: str
    parties: tuple[str, ...]
    dataset: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    triple_source: str = "he"
    deadline_s: float = DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if not self.kind:
            raise ConfigurationError("job spec needs a kind")
        if len(self.parties) < 2 or len(set(self.parties)) != len(self.parties):
            raise ConfigurationError("a job needs at least two distinct parties")
        if self.triple_source not in TRIPLE_SOURCES:
            raise ConfigurationError(
                f"triple_source must be one of {TRIPLE_SOURCES}, got {self.triple_source!r}"
            )
        if not 0 < self.deadline_s <= MAX_DEADLINE_S:
            raise ConfigurationError(f"deadline_s must be in (0, {MAX_DEADLINE_S}]")

    def params_json(self) -> str:
        """Canonical JSON of the parameters."""
        return json.dumps(self.params, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build a spec from a dict (as loaded from YAML or JSON)."""
        known = {"kind", "parties", "dataset", "params", "triple_source", "deadline_s"}
        unknown = set(data) - known
        if unknown:
            raise ConfigurationError(f"unknown job spec fields: {sorted(unknown)}")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise ConfigurationError("params must be a mapping")
        parties = data.get("parties", ())
        if not isinstance(parties, list | tuple) or not all(isinstance(p, str) for p in parties):
            raise ConfigurationError("parties must be a list of party names")
        return cls(
            kind=str(data.get("kind", "")),
            parties=tuple(parties),
            dataset=str(data.get("dataset", "")),
            params=dict(params),
            triple_source=str(data.get("triple_source", "he")),
            deadline_s=float(data.get("deadline_s", DEFAULT_DEADLINE_S)),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> JobSpec:
        """Load a spec from a YAML (or JSON) file."""
        import yaml  # type: ignore[import-untyped,unused-ignore]

        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read job spec {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"job spec {path} must be a mapping")
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """A job as stored by the coordinator."""

    job_id: str
    spec: JobSpec
    owner: str
    state: JobState = JobState.PENDING
    reason: str = ""
    failing_party: str = ""
    phase: str = ""
    progress: float = 0.0
    idempotency_key: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    result: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] | None = None

    def transition(
        self, new: JobState, *, reason: str = "", failing_party: str = "", phase: str = ""
    ) -> JobRecord:
        """Return a copy in state ``new`` (raises JobStateError for an illegal transition)."""
        if new not in TRANSITIONS[self.state]:
            raise JobStateError(f"job {self.job_id}: {self.state.value} -> {new.value} not allowed")
        return replace(
            self,
            state=new,
            reason=reason or self.reason,
            failing_party=failing_party or self.failing_party,
            phase=phase or self.phase,
            updated_at=time.time(),
        )
