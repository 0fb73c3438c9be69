"""A worker keeps its Paillier key pair across "he" jobs of the same parties.

Three in-process workers (one event loop, mTLS on 127.0.0.1) and a coordinator serve remote
medians with the default ``triples="he"``: the first job generates one key pair per worker, the
following ones — including the one after a job refused by a party's policy inside the protocol —
generate none, and every median equals pandas' on the pooled rows exactly (the secure quantile is
exact) and local mode's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import LoopThread, wait_parties
from sklearn.datasets import load_diabetes

from privcomp.backends import paillier
from privcomp.client import connect
from privcomp.errors import PolicyViolation
from privcomp.federation import local
from privcomp.protocols import he_triples
from privcomp.rpc.pki import create_pki
from privcomp.services import server as srv
from privcomp.services.config import CoordinatorConfig, worker_config_from_mapping
from privcomp.services.worker import WorkerRuntime

PARTIES = ("hospital_a", "hospital_b", "hospital_c")
#: hospital_c does not release column s6: a median of s6 is refused inside the protocol.
POLICIES: dict[str, dict[str, Any]] = {
    p: {
        "k": 11,
        "datasets": {
            "patients": {"columns": ["age", "bmi", "bp"] + ([] if p == "hospital_c" else ["s6"])}
        },
    }
    for p in PARTIES
}


def _split() -> dict[str, dict[str, pd.DataFrame]]:
    df = load_diabetes(as_frame=True).frame[["age", "bmi", "bp", "s6"]].iloc[:66]
    return {
        p: {"patients": df.iloc[22 * i : 22 * (i + 1)].reset_index(drop=True)}
        for i, p in enumerate(PARTIES)
    }


async def _start(root: Path, data: dict[str, dict[str, pd.DataFrame]]) -> tuple[Any, ...]:
    run, _, _ = await srv.start_coordinator(
        CoordinatorConfig(listen="127.0.0.1:0", pki_dir=root / "pki", db_path=root / "jobs.db")
    )
    address = f"127.0.0.1:{run.port}"
    workers: list[tuple[Any, WorkerRuntime]] = []
    tasks = []
    for p in PARTIES:
        data[p]["patients"].to_csv(root / f"{p}.csv", index=False)
        cfg = worker_config_from_mapping(
            {
                "name": p,
                "coordinator": address,
                "pki_dir": "pki",
                "heartbeat_s": 1.0,
                "datasets": {"patients": {"path": f"{p}.csv"}},
                "policy": POLICIES[p],
            },
            root,
        )
        w_run, runtime = await srv.start_worker(cfg)
        schemas = await asyncio.to_thread(runtime.frames.schemas)
        tasks.append(
            asyncio.create_task(
                srv.register_loop(
                    cfg, runtime.identity, f"127.0.0.1:{w_run.port}", w_run.stop, schemas
                )
            )
        )
        workers.append((w_run, runtime))
    return run, address, workers, tasks


@pytest.fixture
def cluster(
    tmp_path: Path, loop_thread: LoopThread
) -> Iterator[tuple[str, list[WorkerRuntime], dict[str, dict[str, pd.DataFrame]]]]:
    data = _split()
    create_pki(tmp_path / "pki", list(PARTIES), ["alice"])
    run, address, workers, tasks = loop_thread.run(_start(tmp_path, data))
    try:
        yield address, [rt for _, rt in workers], data
    finally:

        async def stop() -> None:
            for w_run, _ in workers:
                w_run.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w_run, _ in workers:
                await w_run.server.stop(None)
            await run.server.stop(None)

        loop_thread.run(stop())


def test_second_he_job_reuses_keys_and_survives_a_failed_job(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, runtimes, data = cluster
    loc = local(data, POLICIES).table("patients")[["bmi"]].median()  # before the spy
    # Spy on every Paillier key generation in this process (the workers run in it), wherever
    # it is called from: the worker's cache or a triple source generating its own.
    calls: list[int] = []
    real = paillier.keygen

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(paillier, "keygen", spy)
    monkeypatch.setattr(he_triples, "keygen", spy)
    pooled = pd.concat([d["patients"] for d in data.values()], ignore_index=True)
    with connect(address, pki_dir=tmp_path / "pki", analyst="alice", cache=False) as fed:
        wait_parties(fed, PARTIES)
        t = fed.table("patients")[["bmi"]]
        t0 = time.monotonic()
        first = t.median()
        t1 = time.monotonic()
        assert [rt.he_keygens for rt in runtimes] == [1, 1, 1]
        assert len(calls) == 3
        second = t.median()
        t2 = time.monotonic()
        print(f"remote median: first {t1 - t0:.2f} s, second {t2 - t1:.2f} s")
        # (b) no new keys for the same parties.
        assert [rt.he_keygens for rt in runtimes] == [1, 1, 1]
        assert len(calls) == 3
        # (a) exact: the secure median is the pooled order statistic (mean of the middle two).
        want = pooled[["bmi"]].median()
        assert float(first["bmi"]) == float(want["bmi"])
        assert float(second["bmi"]) == float(want["bmi"])
        assert float(second["bmi"]) == float(loc["bmi"])
        # (c) hospital_c refuses s6 in the protocol's consent round (after the keys were in
        # place): the next job still succeeds, on the same keys.
        with pytest.raises(PolicyViolation, match="s6"):
            fed.table("patients")[["s6"]].median()
        third = fed.table("patients")[["bp"]].median()
        assert float(third["bp"]) == float(pooled["bp"].median())
        assert [rt.he_keygens for rt in runtimes] == [1, 1, 1]
        assert len(calls) == 3
