"""Domain ⇄ protobuf translation, in one place (layer: rpc).

Every ``*_to_proto`` has its ``*_from_proto``; each raises :class:`ConfigurationError` (mapped to
INVALID_ARGUMENT) on a malformed message, never a bare exception.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from privcomp.errors import ConfigurationError
from privcomp.jobs.model import JobRecord, JobSpec, JobState
from privcomp.proto.v1 import common_pb2
from privcomp.types import FloatArray

_STATE_TO_PROTO = {
    JobState.PENDING: common_pb2.JOB_STATE_PENDING,
    JobState.RUNNING: common_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: common_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: common_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: common_pb2.JOB_STATE_CANCELLED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
MAX_PARAMS_JSON = 64 * 1024
Schema = dict[str, list[tuple[str, str]]]


def job_spec_to_proto(spec: JobSpec) -> common_pb2.JobSpec:
    """JobSpec → proto."""
    return common_pb2.JobSpec(
        kind=spec.kind,
        parties=list(spec.parties),
        dataset=spec.dataset,
        params_json=spec.params_json(),
        triple_source=spec.triple_source,
        deadline_s=spec.deadline_s,
    )


def job_spec_from_proto(msg: common_pb2.JobSpec) -> JobSpec:
    """Proto → JobSpec (validates the JSON parameters and every field)."""
    if len(msg.params_json) > MAX_PARAMS_JSON:
        raise ConfigurationError(f"params_json is longer than {MAX_PARAMS_JSON} bytes")
    try:
        params: Any = json.loads(msg.params_json) if msg.params_json else {}
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigurationError("params_json is not valid JSON") from exc
    if not isinstance(params, dict):
        raise ConfigurationError("params_json must be a JSON object")
    deadline = msg.deadline_s if msg.deadline_s else None
    data: dict[str, Any] = {
        "kind": msg.kind,
        "parties": list(msg.parties),
        "dataset": msg.dataset,
        "params": params,
        "triple_source": msg.triple_source or "he",
    }
    if deadline is not None:
        if not math.isfinite(deadline):
            raise ConfigurationError("deadline_s must be finite")
        data["deadline_s"] = deadline
    return JobSpec.from_dict(data)


def job_state_to_proto(state: JobState) -> common_pb2.JobState.ValueType:
    """JobState → proto enum."""
    return _STATE_TO_PROTO[state]


def job_state_from_proto(value: int) -> JobState:
    """Proto enum → JobState."""
    state: JobState | None = _STATE_FROM_PROTO.get(value)  # type: ignore[call-overload]
    if state is None:
        raise ConfigurationError(f"unknown job state {value}")
    return state


def job_status_to_proto(rec: JobRecord) -> common_pb2.JobStatus:
    """JobRecord → JobStatus (no result)."""
    return common_pb2.JobStatus(
        job_id=rec.job_id,
        state=_STATE_TO_PROTO[rec.state],
        reason=rec.reason,
        failing_party=rec.failing_party,
        phase=rec.phase,
        progress=rec.progress,
        spec=job_spec_to_proto(rec.spec),
        created_at=rec.created_at,
        updated_at=rec.updated_at,
    )


def result_to_proto(values: Mapping[str, FloatArray]) -> common_pb2.JobResult:
    """Released named arrays → JobResult."""
    out = common_pb2.JobResult()
    for name in sorted(values):
        arr = np.asarray(values[name], dtype=np.float64)
        out.values.add(name=name, values=arr.ravel().tolist(), shape=list(arr.shape))
    return out


def result_from_proto(msg: common_pb2.JobResult) -> dict[str, FloatArray]:
    """JobResult → named float arrays (validates shapes)."""
    out: dict[str, FloatArray] = {}
    for v in msg.values:
        shape = tuple(int(d) for d in v.shape)
        if any(d < 0 for d in shape) or math.prod(shape) != len(v.values):
            raise ConfigurationError(f"released value {v.name!r} has an inconsistent shape")
        out[v.name] = np.asarray(v.values, dtype=np.float64).reshape(shape)
    return out


def result_to_record(
    values: Mapping[str, FloatArray],
) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    """Named arrays → the store's JSON-friendly form."""
    return {
        k: (tuple(np.shape(v)), tuple(float(x) for x in np.asarray(v, dtype=np.float64).ravel()))
        for k, v in values.items()
    }


def result_from_record(
    rec: Mapping[str, tuple[tuple[int, ...], tuple[float, ...]]],
) -> dict[str, FloatArray]:
    """The store's form → named arrays."""
    return {k: np.asarray(v[1], dtype=np.float64).reshape(v[0]) for k, v in rec.items()}


def schemas_to_proto(schemas: Schema) -> list[common_pb2.DatasetSchema]:
    """Dataset name → [(column, dtype)] → protos."""
    return [
        common_pb2.DatasetSchema(
            name=name, columns=[common_pb2.ColumnSchema(name=c, dtype=t) for c, t in cols]
        )
        for name, cols in sorted(schemas.items())
    ]


def schemas_from_proto(msgs: list[common_pb2.DatasetSchema] | Any) -> Schema:
    """Protos → dataset name → [(column, dtype)]."""
    out: Schema = {}
    for m in msgs:
        if not m.name:
            raise ConfigurationError("dataset schema without a name")
        out[m.name] = [(c.name, c.dtype) for c in m.columns]
    return out
