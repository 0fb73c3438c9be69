"""``privcomp demo``: a whole federation on this machine in one command (layer: demo).

Creates a temporary development PKI, writes small synthetic datasets (deterministic, generated at
start), starts a coordinator and three workers — ``hospital_a``, ``hospital_b`` and ``insurer`` —
as separate processes on 127.0.0.1, submits one joint job and prints the released result next to
the plaintext answer computed here for comparison. Then it stops every process it started (by
PID) and deletes the temporary directory.

The job: joint count, sum, mean and variance of the ``cost`` column held by all three parties
(horizontal data), and the secure product of ``hospital_a``'s patient count and the insurer's
mean ``cost`` (an expected-cost figure neither party could compute alone). Beaver triples come
from the default Paillier-based source: no dealer, no third party.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privcomp.client import Federation, connect
from privcomp.errors import ConfigurationError, ServiceUnavailableError
from privcomp.jobs.model import JobSpec
from privcomp.rpc.pki import create_pki

PARTIES = ("hospital_a", "hospital_b", "insurer")
ROWS = {"hospital_a": 240, "hospital_b": 180, "insurer": 300}
ANALYST = "demo"
Echo = Callable[[str], None]


def synthetic_data(directory: Path) -> dict[str, np.ndarray]:
    """Write one CSV per party (age, cost) from a fixed seed; return the cost columns."""
    out: dict[str, np.ndarray] = {}
    for i, party in enumerate(PARTIES):
        gen = np.random.default_rng(20240 + i)  # demo data only: deterministic, not secret
        age = gen.integers(18, 90, ROWS[party])
        cost = np.round(800 + 35 * age + gen.gamma(2.0, 400 + 150 * i, ROWS[party]), 2)
        lines = ["patient_id,age,cost"] + [
            f"{party[0]}{j:04d},{a},{c:.2f}" for j, (a, c) in enumerate(zip(age, cost, strict=True))
        ]
        (directory / f"{party}.csv").write_text("\n".join(lines) + "\n")
        out[party] = cost
    return out


def _worker_config(directory: Path, party: str, coordinator: str) -> Path:
    path = directory / f"{party}.toml"
    path.write_text(
        f'name = "{party}"\nlisten = "127.0.0.1:0"\ncoordinator = "{coordinator}"\n'
        f'pki_dir = "pki"\nheartbeat_s = 2.0\n\n[datasets.patients]\npath = "{party}.csv"\n\n'
        "[policy]\nk = 11\n[policy.datasets.patients]\n"
        'columns = ["age", "cost"]\noperations = ["count", "sum", "mean", "var"]\n'
    )
    return path


def read_port_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """Wait for a process's port file; ``None`` if it did not appear or the process died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return path.read_text().strip()
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


@dataclass
class Cluster:
    """Processes started by the demo (stopped by PID, never by name)."""

    directory: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> None:
        """Start ``python -m privcomp.cli.main ARGS`` with its log in the temp dir."""
        with (self.directory / f"{name}.log").open("wb") as log:  # the child keeps its own fd
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "privcomp.cli.main", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )

    def wait_file(self, path: Path, name: str, timeout: float = 20.0) -> str:
        """Wait for a port file; fail early if the process died."""
        address = read_port_file(path, self.procs[name], timeout)
        if address is not None:
            return address
        log = (self.directory / f"{name}.log").read_text()[-2000:]
        raise ServiceUnavailableError(f"{name} did not start:\n{log}")

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM every process, wait, SIGKILL stragglers."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _start_coordinator(cluster: Cluster, timeout: float = 20.0) -> str:
    args = ["coordinator", "--pki", "pki", "--db", "jobs.db", "--listen", "127.0.0.1:0"]
    cluster.start("coordinator", [*args, "--port-file", "coordinator.addr"])
    return cluster.wait_file(cluster.directory / "coordinator.addr", "coordinator", timeout)


def start_cluster(directory: Path, parties: tuple[str, ...] = PARTIES) -> tuple[Cluster, str]:
    """Start a coordinator and one worker per party; return the cluster and coordinator address."""
    cluster = Cluster(directory)
    try:
        address = _start_coordinator(cluster)
        for party in parties:
            cfg = _worker_config(directory, party, address)
            cluster.start(party, ["worker", str(cfg), "--port-file", f"{party}.addr"])
        for party in parties:
            cluster.wait_file(directory / f"{party}.addr", party)
    except BaseException:
        cluster.stop()  # the caller never receives the cluster: do not leak its processes
        raise
    return cluster, address


def wait_parties(fed: Federation, names: tuple[str, ...], timeout: float = 20.0) -> None:
    """Wait until every party has registered."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if set(names) <= set(fed.parties()):
            return
        time.sleep(0.1)
    raise ServiceUnavailableError("workers did not register with the coordinator in time")


@dataclass
class Deployment:
    """A coordinator and one worker per party on 127.0.0.1, for notebooks, tests and benchmarks.

    Every process runs separately (``privcomp coordinator`` / ``privcomp worker``) with mTLS
    from a fresh development PKI; each party's DataFrames are written to its own files, which
    only its worker reads. :meth:`stop` (also registered with :mod:`atexit`, and called by the
    context manager) stops every process by PID and deletes the temporary directory.

    Examples
    --------
    >>> with Deployment.start({"a": {"t": df_a}, "b": {"t": df_b}}) as dep:  # doctest: +SKIP
    ...     fed = dep.connect()
    ...     fed.table("t").mean()
    """

    directory: Path
    cluster: Cluster
    address: str = ""
    analyst: str = ANALYST
    dealer: str | None = None
    worker_options: dict[str, Any] = field(default_factory=dict)
    _owned: bool = True

    @property
    def pki_dir(self) -> Path:
        """The development PKI (CA, certificates, the analyst's token)."""
        return self.directory / "pki"

    @classmethod
    def start(
        cls,
        data: Mapping[str, Mapping[str, pd.DataFrame]],
        policies: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        dealer: bool = False,
        file_format: str = "csv",
        directory: Path | None = None,
        analyst: str = ANALYST,
        worker_options: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """Write the parties' data, start coordinator and workers, wait until all registered.

        ``file_format`` is ``"csv"`` (pandas writes and reads floats round-trip exactly) or
        ``"parquet"``. With ``dealer=True`` a trusted dealer party named
        ``"dealer"`` is started too (for ``pc.connect(..., triples="dealer", dealer="dealer")``).
        ``worker_options`` are extra worker configuration keys (e.g. ``round_timeout_s``).
        """
        if file_format not in ("csv", "parquet"):
            raise ConfigurationError("file_format must be 'csv' or 'parquet'")
        owned = directory is None
        root = Path(tempfile.mkdtemp(prefix="privcomp-deploy-")) if directory is None else directory
        dep = cls(root, Cluster(root), analyst=analyst, dealer="dealer" if dealer else None)
        dep.worker_options = dict(worker_options or {})
        dep._owned = owned
        atexit.register(dep.stop)
        try:
            names = [*data, *(["dealer"] if dealer else [])]
            create_pki(dep.pki_dir, names, [analyst])
            dep.address = _start_coordinator(dep.cluster, 60.0)
            for party, tables in data.items():
                cfg = dep._worker_config(
                    party,
                    tables,
                    (policies or {}).get(party),
                    file_format,
                    trusted_dealers=["dealer"] if dealer else [],
                )
                dep.cluster.start(party, ["worker", str(cfg), "--port-file", f"{party}.addr"])
            if dealer:
                cfg = dep._worker_config("dealer", {}, None, file_format, allow_dealer=True)
                dep.cluster.start("dealer", ["worker", str(cfg), "--port-file", "dealer.addr"])
            for party in names:
                dep.cluster.wait_file(root / f"{party}.addr", party, timeout=60.0)
            with connect(dep.address, pki_dir=dep.pki_dir, analyst=analyst) as fed:
                wait_parties(fed, tuple(names), timeout=60.0)
        except BaseException:
            dep.stop()
            raise
        return dep

    def _worker_config(
        self,
        party: str,
        tables: Mapping[str, pd.DataFrame],
        policy: Mapping[str, Any] | None,
        file_format: str,
        *,
        allow_dealer: bool = False,
        trusted_dealers: Sequence[str] = (),
    ) -> Path:
        datasets = {}
        for name, frame in tables.items():
            path = self.directory / f"{party}.{name}.{file_format}"
            if file_format == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            datasets[name] = {"path": path.name}
        cfg: dict[str, Any] = {
            "name": party,
            "listen": "127.0.0.1:0",
            "coordinator": self.address,
            "pki_dir": "pki",
            "heartbeat_s": 2.0,
            "datasets": datasets,
            "allow_dealer": allow_dealer,
            "trusted_dealers": list(trusted_dealers),
            **self.worker_options,
        }
        if policy is not None:
            cfg["policy"] = dict(policy)
        import yaml  # type: ignore[import-untyped,unused-ignore]

        path = self.directory / f"{party}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def connect(self, **kwargs: Any) -> Federation:
        """``pc.connect`` to this deployment as its analyst (dealer set if one was started)."""
        if self.dealer is not None:
            kwargs.setdefault("dealer", self.dealer)
        return connect(self.address, pki_dir=self.pki_dir, analyst=self.analyst, **kwargs)

    def stop(self) -> None:
        """Stop every process by PID; delete the temporary directory (idempotent)."""
        self.cluster.stop()
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def demo_spec() -> JobSpec:
    """The demo job."""
    return JobSpec(
        kind="stats",
        parties=PARTIES,
        dataset="patients",
        params={
            "column": "cost",
            "product": {
                "left": {"party": "hospital_a", "agg": "count", "column": "cost"},
                "right": {"party": "insurer", "agg": "mean", "column": "cost"},
            },
        },
        triple_source="he",
        deadline_s=60.0,
    )


def _table(rows: list[tuple[str, float, float]]) -> list[str]:
    out = [
        f"  {'figure':<34} {'privcomp (MPC)':>16} {'plaintext':>16} {'abs. error':>11}",
        "  " + "-" * 80,
    ]
    for name, got, want in rows:
        out.append(f"  {name:<34} {got:>16,.4f} {want:>16,.4f} {abs(got - want):>11.2e}")
    return out


def run_demo(echo: Echo, *, progress: bool = True, keep: bool = False) -> bool:
    """Run the demo; returns True if every figure matches the plaintext answer."""
    t0 = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="privcomp-demo-"))
    cluster: Cluster | None = None
    try:
        echo(f"privcomp demo — temporary federation in {directory}")
        create_pki(directory / "pki", list(PARTIES), [ANALYST])
        data = synthetic_data(directory)
        echo(
            "  created a development CA, certificates and tokens; synthetic data for "
            + ", ".join(f"{p} ({ROWS[p]} rows)" for p in PARTIES)
        )
        cluster, address = start_cluster(directory)
        with connect(address, pki_dir=directory / "pki", analyst=ANALYST) as fed:
            wait_parties(fed, PARTIES)
            echo(
                f"  coordinator at {address}; workers "
                + ", ".join(f"{p.name} ({p.address})" for p in fed.summaries())
            )
            echo(
                "  job: joint count/sum/mean/variance of 'cost' (horizontal, 3 parties) and the "
                "secure product count(hospital_a) x mean_cost(insurer)"
            )
            echo("  triples: generated by the parties, OT extension (default; no dealer)")
            t_job = time.monotonic()
            job = fed.submit(demo_spec())
            info = job.watch(progress=progress, timeout=90.0)
            if info.state.value != "SUCCEEDED":
                echo(
                    f"  job {info.state.value}: {info.reason} (party {info.failing_party}, "
                    f"phase {info.phase})"
                )
                return False
            result = job.result()
            t_job = time.monotonic() - t_job
        allc = np.concatenate([data[p] for p in PARTIES])
        rows = [
            ("count", float(result["count"]), float(allc.size)),
            ("sum of cost", float(result["sum"]), float(allc.sum())),
            ("mean cost", float(result["mean"]), float(allc.mean())),
            ("variance of cost (ddof=1)", float(result["var"]), float(allc.var(ddof=1))),
            (
                "count(hosp. A) x mean cost(insurer)",
                float(result["product"]),
                float(data["hospital_a"].size * data["insurer"].mean()),
            ),
        ]
        echo("")
        for line in _table(rows):
            echo(line)
        ok = all(abs(g - w) <= 1e-6 * max(1.0, abs(w)) + 0.05 for _, g, w in rows[:4]) and (
            abs(rows[4][1] - rows[4][2]) <= 1e-3 * abs(rows[4][2])
        )
        echo("")
        echo(
            f"  job {job.job_id}: {t_job:.1f} s; the coordinator saw only the spec, schemas, "
            "progress and these released figures."
        )
        return ok
    finally:
        if cluster is not None:
            cluster.stop()
        if keep:
            echo(f"  kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
        echo(
            f"  stopped {len(cluster.procs) if cluster else 0} processes; "
            f"total {time.monotonic() - t0:.1f} s"
        )
