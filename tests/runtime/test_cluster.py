"""A real federation: coordinator and workers as separate processes on 127.0.0.1 (mTLS).

One module-scoped cluster (coordinator, hospital_a, hospital_b, insurer, dealer) serves these
tests; every process is stopped by PID at the end, even on failure.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PARTIES, Procs, wait_parties, write_party_data

from privcomp.client import Federation, JobState, connect
from privcomp.errors import ConfigurationError, JobFailedError, JobNotFoundError
from privcomp.rpc.pki import Identity


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pki: tuple[Path, dict[str, Identity]]
) -> Iterator[tuple[Federation, dict[str, np.ndarray], Procs, str]]:
    d = tmp_path_factory.mktemp("cluster")
    data = write_party_data(d)
    procs = Procs(d)
    try:
        address = procs.start_coordinator(pki[0])
        for p in PARTIES:
            procs.start_worker(p, address, pki[0], trusted_dealers=["dealer"])
        procs.start_worker("dealer", address, pki[0], allow_dealer=True)
        fed = connect(address, pki_dir=pki[0], analyst="alice")
        wait_parties(fed, [*PARTIES, "dealer"])
        yield fed, data, procs, address
        fed.close()
    finally:
        procs.stop_all()


def _spec(triples: str = "he", **params: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "column": "cost",
        "product": {
            "left": {"party": "hospital_a", "agg": "count", "column": "cost"},
            "right": {"party": "insurer", "agg": "mean", "column": "cost"},
        },
    }
    p.update(params)
    if triples == "dealer":
        p["dealer"] = "dealer"
    return {
        "kind": "stats",
        "parties": list(PARTIES),
        "dataset": "patients",
        "params": p,
        "triple_source": triples,
        "deadline_s": 60,
    }


def _check(res: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> None:
    allc = np.concatenate([data[p] for p in PARTIES])
    assert res["count"] == allc.size
    np.testing.assert_allclose(res["sum"], allc.sum(), rtol=1e-12)
    np.testing.assert_allclose(res["mean"], allc.mean(), rtol=1e-12)
    np.testing.assert_allclose(res["var"], allc.var(ddof=1), rtol=1e-10)
    want = data["hospital_a"].size * data["insurer"].mean()
    assert abs(float(res["product"]) - want) <= data["hospital_a"].size * 2.0**-15 + 2.0**-14


@pytest.mark.parametrize("triples", ["he", "dealer"])
def test_joint_job_across_processes_matches_numpy(cluster: Any, triples: str) -> None:
    fed, data, _, _ = cluster
    job = fed.submit(_spec(triples))
    info = job.watch(progress=False, timeout=60)
    assert info.state == JobState.SUCCEEDED, info
    assert info.progress == 1.0
    _check(job.result(), data)


def test_parties_publish_schemas_only(cluster: Any) -> None:
    fed, _, _, _ = cluster
    by_name = {p.name: p for p in fed.summaries()}
    assert by_name["hospital_a"].datasets == {"patients": [("age", "int64"), ("cost", "float64")]}
    assert by_name["dealer"].datasets == {}


def test_policy_refusal_fails_with_party_and_phase(cluster: Any) -> None:
    fed, _, _, _ = cluster
    spec = _spec()
    spec["params"]["product"]["right"]["agg"] = "sum"  # insurer allows sum; now change column
    spec["params"]["column"] = "age"
    spec["params"]["product"]["right"]["column"] = "patient_secret"
    job = fed.submit(spec)
    info = job.watch(progress=False, timeout=30)
    assert info.state == JobState.FAILED
    assert info.failing_party == "insurer"
    assert info.phase == "prepare"
    assert "patient_secret" in info.reason
    with pytest.raises(JobFailedError):
        job.result()


def test_jobs_are_private_to_their_owner_and_validated(cluster: Any, pki: Any) -> None:
    fed, _, _, address = cluster
    job = fed.submit(_spec())
    with connect(address, pki_dir=pki[0], analyst="bob") as bob, pytest.raises(JobNotFoundError):
        bob.status(job.job_id)
    with pytest.raises(ConfigurationError):
        fed.submit({**_spec(), "parties": ["hospital_a", "nobody"]})
    with pytest.raises(ConfigurationError):
        fed.submit({**_spec(), "kind": "shell"})
    job.watch(progress=False, timeout=60)


def test_cancel(cluster: Any) -> None:
    fed, _, _, _ = cluster
    job = fed.submit(_spec())
    info = job.cancel()
    assert info.state in (JobState.CANCELLED, JobState.SUCCEEDED)
    if info.state == JobState.CANCELLED:
        assert info.reason == "cancelled by requester"
        with pytest.raises(JobFailedError, match="CANCELLED"):
            job.result()
    # the federation keeps working after a cancellation
    assert fed.submit(_spec()).watch(progress=False, timeout=60).state == JobState.SUCCEEDED


def test_cli_commands(cluster: Any, pki: Any, tmp_path: Path) -> None:
    _, data, _, address = cluster
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "kind: stats\nparties: [hospital_a, hospital_b, insurer]\ndataset: patients\n"
        "params: {column: cost}\n"
    )
    env_args = ["--coordinator", address, "--pki", str(pki[0]), "--analyst", "alice"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "privcomp.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = run("submit", str(job_file), *env_args)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[2]
    allc = np.concatenate([data[p] for p in PARTIES])
    res = run("result", job_id, "--json", *env_args)
    assert res.returncode == 0
    assert f"{allc.size}" in res.stdout
    st = run("status", job_id, *env_args)
    assert "SUCCEEDED" in st.stdout
    assert "hospital_a" in run("parties", *env_args).stdout
    missing = run("status", "nope", *env_args)
    assert missing.returncode == 3
    assert "not found" in missing.stderr
    bad = run("parties", "--coordinator", "127.0.0.1:1", "--pki", str(pki[0]), "--analyst", "alice")
    assert bad.returncode == 4
    assert "UNAVAILABLE" in bad.stderr
