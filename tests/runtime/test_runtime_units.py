"""Fast unit tests of the runtime pieces that need no network: jobs, store, serde, status,
chunking and the job kinds on the in-memory network (the same code the workers run)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes

from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import (
    AuthenticationError,
    CodecError,
    ConfigurationError,
    JobNotFoundError,
    JobStateError,
    PermissionDeniedError,
    PolicyViolation,
    PrivcompError,
    TransportError,
)
from privcomp.jobs.dealer_net import NetworkDealerSource, serve_dealer
from privcomp.jobs.kinds import BenchMulKind, LocalData, StatsKind, validate_spec
from privcomp.jobs.model import JobRecord, JobSpec, JobState
from privcomp.proto.v1 import common_pb2, peer_pb2
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.rpc import serde
from privcomp.rpc.status import code_for, error_class_for, error_from_rpc
from privcomp.rpc.transport import JobMailbox, chunk_requests, encode_chunk
from privcomp.services.jobstore import JobRepository
from privcomp.transport.memory import ComputingPartiesView, InMemoryNetwork

PARTIES = ("a", "b", "c")


def _spec(**kw: Any) -> JobSpec:
    base: dict[str, Any] = {
        "kind": "stats",
        "parties": list(PARTIES),
        "dataset": "d",
        "params": {"column": "x"},
    }
    base.update(kw)
    return JobSpec.from_dict(base)


def test_state_machine_allows_only_documented_transitions() -> None:
    rec = JobRecord(job_id="j", spec=_spec(), owner="analyst:x")
    running = rec.transition(JobState.RUNNING)
    failed = running.transition(JobState.FAILED, reason="r", failing_party="b", phase="input")
    assert (failed.state, failed.reason, failed.failing_party, failed.phase) == (
        JobState.FAILED,
        "r",
        "b",
        "input",
    )
    for terminal in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        done = running.transition(terminal)
        with pytest.raises(JobStateError):
            done.transition(JobState.RUNNING)
    with pytest.raises(JobStateError):
        rec.transition(JobState.SUCCEEDED)  # PENDING cannot succeed without running


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": ""},
        {"parties": ["a"]},
        {"parties": ["a", "a"]},
        {"triple_source": "magic"},
        {"deadline_s": 0},
        {"deadline_s": 1e9},
        {"unknown": 1},
        {"params": [1]},
    ],
)
def test_job_spec_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        _spec(**bad)


def test_kind_validation_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        "kind: stats\nparties: [a, b, c]\ndataset: d\nparams: {column: x}\n"
    )
    spec = JobSpec.from_yaml(tmp_path / "job.yaml")
    validate_spec(spec)
    assert spec.parties == PARTIES
    for params in (
        {"column": ""},
        {"column": "x", "evil": "code"},
        {"column": "x", "product": {"left": {"party": "a", "agg": "sum", "column": "x"}}},
        {
            "column": "x",
            "product": {
                "left": {"party": "a", "agg": "sum", "column": "x"},
                "right": {"party": "a", "agg": "sum", "column": "x"},
            },
        },
    ):
        with pytest.raises(ConfigurationError):
            validate_spec(replace(spec, params=params))
    with pytest.raises(ConfigurationError, match="unknown job kind"):
        validate_spec(replace(spec, kind="exec_python"))
    with pytest.raises(ConfigurationError, match="dealer"):
        validate_spec(replace(spec, triple_source="dealer"))


def test_store_wal_idempotency_and_restart(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    repo = JobRepository(db)
    rec = JobRecord(job_id="j1", spec=_spec(), owner="analyst:x", idempotency_key="k")
    assert repo.insert(rec).job_id == "j1"
    # Same owner and key: the existing job comes back, no second row.
    assert repo.insert(replace(rec, job_id="j2")).job_id == "j1"
    # Another owner may reuse the key.
    assert repo.insert(replace(rec, job_id="j3", owner="analyst:y")).job_id == "j3"
    repo.update(rec.transition(JobState.RUNNING, phase="input"))
    with pytest.raises(JobNotFoundError):
        repo.get("nope")
    assert len(repo.list()) == 2
    assert len(repo.list(owner="analyst:x")) == 1
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    # A new process: nothing may stay RUNNING or PENDING.
    repo2 = JobRepository(db)
    assert repo2.fail_running() == 2
    states = {r.job_id: (r.state, r.reason, r.phase) for r in repo2.list()}
    assert states["j1"] == (JobState.FAILED, "coordinator restarted", "input")
    assert states["j3"][0] == JobState.FAILED
    assert repo2.db.integrity_ok()
    done = repo2.get("j1")
    repo2.update(replace(done, result={"m": ((), (1.5,))}))
    assert serde.result_from_record(repo2.get("j1").result or {})["m"] == 1.5
    repo.close()
    repo2.close()


def test_serde_round_trips() -> None:
    spec = _spec(
        params={
            "column": "x",
            "product": {
                "left": {"party": "a", "agg": "count", "column": "x"},
                "right": {"party": "c", "agg": "mean", "column": "x"},
            },
        },
        deadline_s=33.0,
    )
    assert serde.job_spec_from_proto(serde.job_spec_to_proto(spec)) == spec
    res = {"m": np.array(2.5), "v": np.arange(6, dtype=np.float64).reshape(2, 3)}
    back = serde.result_from_proto(serde.result_to_proto(res))
    assert set(back) == set(res)
    assert all(np.array_equal(back[k], res[k]) for k in res)
    schemas = {"d": [("x", "float64"), ("y", "int64")]}
    assert serde.schemas_from_proto(serde.schemas_to_proto(schemas)) == schemas
    rec = JobRecord(job_id="j", spec=spec, owner="o")
    st = serde.job_status_to_proto(rec)
    assert serde.job_state_from_proto(st.state) == JobState.PENDING
    for state in JobState:
        assert serde.job_state_from_proto(serde.job_state_to_proto(state)) == state


@pytest.mark.parametrize("params_json", ["{", "[1]", '"x"', "{" * 5000 + "}" * 5000, "x" * 70000])
def test_serde_refuses_malformed_specs(params_json: str) -> None:
    msg = common_pb2.JobSpec(kind="stats", parties=["a", "b"], params_json=params_json)
    with pytest.raises(ConfigurationError):
        serde.job_spec_from_proto(msg)


def test_serde_refuses_inconsistent_result_shape() -> None:
    msg = common_pb2.JobResult()
    msg.values.add(name="m", values=[1.0, 2.0], shape=[3])
    with pytest.raises(ConfigurationError):
        serde.result_from_proto(msg)


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "d"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (AuthenticationError("x"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDeniedError("x"), grpc.StatusCode.PERMISSION_DENIED),
        (PolicyViolation("x"), grpc.StatusCode.PERMISSION_DENIED),
        (JobNotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (JobStateError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (ConfigurationError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (CodecError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (TransportError("x"), grpc.StatusCode.UNAVAILABLE),
        (PrivcompError("x"), grpc.StatusCode.INTERNAL),
        (ValueError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_table_both_directions(exc: BaseException, code: grpc.StatusCode) -> None:
    assert code_for(exc) == code
    back = error_from_rpc(_FakeRpcError(code), "call")
    assert isinstance(back, error_class_for(code))
    assert code_for(back) == code


def test_chunking_and_mailbox() -> None:
    payload = bytes(range(256)) * (5 * 4096 + 3)  # ~5 MiB, not a multiple of 1 MiB
    chunks = chunk_requests("j", "t", 1, payload)
    assert len(chunks) == 6
    assert all(len(c.data) <= 1 << 20 for c in chunks)
    assert b"".join(c.data for c in chunks) == payload
    assert [c.chunk_index for c in chunks] == list(range(6))
    assert len(chunk_requests("j", "t", 1, b"")) == 1

    async def run() -> None:
        box = JobMailbox("j", 3)
        box.deliver(2, "t2", b"late")  # arrives before anyone waits
        waiter = asyncio.create_task(box.get(1, "t1", 1.0))
        await asyncio.sleep(0)
        box.deliver(1, "t1", b"x")
        assert await waiter == b"x"
        assert await box.get(2, "t2", 1.0) == b"late"
        box.deliver(0, "t", b"1")
        with pytest.raises(ConfigurationError):
            box.deliver(0, "t", b"2")  # duplicate (sender, tag)
        with pytest.raises(ConfigurationError):
            box.deliver(3, "t", b"")  # no such sender
        with pytest.raises(TimeoutError):
            await box.get(1, "never", 0.05)
        box.close()
        with pytest.raises(TransportError):
            box.deliver(1, "after", b"")

    asyncio.run(run())


def _columns(seed: int, rows: tuple[int, ...]) -> list[LocalData]:
    gen = np.random.default_rng(seed)
    return [
        LocalData({"x": np.round(gen.normal(50, 12, r), 3), "y": gen.normal(2, 1, r)}) for r in rows
    ]


async def _run_stats(datas: list[LocalData], spec: JobSpec, dealer_mode: str) -> list[Any]:
    n = len(datas)
    progress: list[str] = []
    if dealer_mode == "network":
        net = InMemoryNetwork(n + 1)
        ctxs = [
            PartyContext(
                transport=ComputingPartiesView(net.transports[i], n), triples=NetworkDealerSource(n)
            )
            for i in range(n)
        ]

        async def party(i: int) -> Any:
            out = await StatsKind().run(ctxs[i], spec, datas[i], lambda p, f: progress.append(p))
            await ctxs[i].triples.stop(ctxs[i])  # type: ignore[attr-defined]
            return out

        served, *outs = await asyncio.gather(
            serve_dealer(ComputingPartiesView(net.transports[n], n), n, TrustedDealer(n)),
            *(party(i) for i in range(n)),
        )
        assert served >= 2  # Beaver triple + truncation pair
        return outs
    net = InMemoryNetwork(n)
    dealer = TrustedDealer(n)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    return list(
        await asyncio.gather(
            *(
                StatsKind().run(ctxs[i], spec, datas[i], lambda p, f: progress.append(p))
                for i in range(n)
            )
        )
    )


@pytest.mark.parametrize("dealer_mode", ["shared", "network"])
@pytest.mark.parametrize("source", ["random", "diabetes"])
def test_stats_kind_matches_numpy(source: str, dealer_mode: str) -> None:
    if source == "random":
        datas = _columns(3, (40, 25, 33))
    else:
        ds = load_diabetes()
        bmi = ds.data[:, 2] * 100.0  # standardised bmi, scaled; 442 rows split 3 ways
        age = ds.data[:, 0] * 100.0
        parts = np.array_split(np.arange(len(bmi)), 3)
        datas = [LocalData({"x": bmi[p], "y": age[p]}) for p in parts]
    spec = _spec(
        params={
            "column": "x",
            "product": {
                "left": {"party": "a", "agg": "count", "column": "x"},
                "right": {"party": "c", "agg": "mean", "column": "y"},
            },
        }
    )
    outs = asyncio.run(_run_stats(datas, spec, dealer_mode))
    allx = np.concatenate([d.columns["x"] for d in datas])
    for out in outs:  # every party releases the same figures
        assert out["count"] == allx.size
        np.testing.assert_allclose(out["sum"], allx.sum(), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(out["mean"], allx.mean(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["var"], allx.var(ddof=1), rtol=1e-10)
        want = len(datas[0].columns["x"]) * datas[2].columns["y"].mean()
        # fixed point, 16 fractional bits: encoding + truncation error < 2^-15 * |count| + 2^-15
        assert abs(out["product"] - want) <= len(datas[0].columns["x"]) * 2.0**-15 + 2.0**-14


def test_bench_kind_matches_numpy() -> None:
    n = 5000
    spec = JobSpec(kind="bench_mul", parties=PARTIES, params={"n": n, "seed": 4})
    validate_spec(spec)

    async def run() -> list[Any]:
        net = InMemoryNetwork(3)
        dealer = TrustedDealer(3, rng=InsecureSeededRandom(1))
        ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
        return list(
            await asyncio.gather(
                *(BenchMulKind().run(c, spec, LocalData({}), lambda p, f: None) for c in ctxs)
            )
        )

    x0 = BenchMulKind.inputs(n, 4, 0).astype(np.int64)
    x1 = BenchMulKind.inputs(n, 4, 1).astype(np.int64)
    for out in asyncio.run(run()):
        assert out["sum"] == float(np.sum(x0 * x1))


@settings(max_examples=200, deadline=None)
@given(
    job_id=st.text(max_size=70),
    tag=st.text(max_size=40),
    sender=st.integers(-(2**31), 2**31 - 1),
    index=st.integers(-(2**31), 2**31 - 1),
    total=st.integers(-(2**63), 2**63 - 1),
    data=st.binary(max_size=300),
)
def test_hand_encoded_chunk_is_the_protobuf_encoding(
    job_id: str, tag: str, sender: int, index: int, total: int, data: bytes
) -> None:
    """encode_chunk == DeliverRequest(...).SerializeToString(), and parses back."""
    wire = encode_chunk(job_id, tag, sender, index, total, memoryview(data))
    msg = peer_pb2.DeliverRequest(
        job_id=job_id, tag=tag, sender=sender, chunk_index=index, total_length=total, data=data
    )
    assert wire == msg.SerializeToString(deterministic=True)
    assert peer_pb2.DeliverRequest.FromString(wire) == msg


def test_hand_encoded_chunk_of_a_full_mib() -> None:
    data = bytes(range(256)) * 4096
    wire = encode_chunk("job", "t", 2, 7, 10 * len(data), data)
    back = peer_pb2.DeliverRequest.FromString(wire)
    assert (back.job_id, back.tag, back.sender, back.chunk_index) == ("job", "t", 2, 7)
    assert back.data == data
    assert back.total_length == 10 * len(data)
