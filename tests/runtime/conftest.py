"""Fixtures of the runtime tests: a PKI, worker/coordinator subprocesses and cleanup.

Every process a test starts is stopped by PID in a finalizer, even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privcomp.demo import read_port_file
from privcomp.rpc.pki import Identity, create_pki

PARTIES = ("hospital_a", "hospital_b", "insurer")
ALL_IDENTITIES = (*PARTIES, "dealer", "bench_a", "bench_b", "bench_c")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Identity]]:
    """A development CA with every party, a dealer and two analysts (alice, bob)."""
    d = tmp_path_factory.mktemp("pki")
    return d, create_pki(d, list(ALL_IDENTITIES), ["alice", "bob"])


def write_party_data(directory: Path, seed: int = 7, rows: int = 60) -> dict[str, np.ndarray]:
    """Random (age, cost) CSVs per party; returns cost columns."""
    gen = np.random.default_rng(seed)
    out = {}
    for p in PARTIES:
        age = gen.integers(18, 90, rows)
        cost = np.round(gen.normal(3000, 800, rows), 2)
        lines = ["age,cost"] + [f"{a},{c:.2f}" for a, c in zip(age, cost, strict=True)]
        (directory / f"{p}.csv").write_text("\n".join(lines) + "\n")
        out[p] = cost
    return out


def worker_toml(directory: Path, name: str, coordinator: str, pki_dir: Path, **extra: Any) -> Path:
    """Write a worker config (policy allows age/cost count/sum/mean/var)."""
    lines = [
        f'name = "{name}"',
        'listen = "127.0.0.1:0"',
        f'coordinator = "{coordinator}"',
        f'pki_dir = "{pki_dir}"',
        "heartbeat_s = 1.0",
    ]
    for k, v in extra.items():
        lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else v}")
    if (directory / f"{name}.csv").exists():
        lines += ["", "[datasets.patients]", f'path = "{name}.csv"']
    lines += [
        "",
        "[policy]",
        "k = 11",
        "[policy.datasets.patients]",
        'columns = ["age", "cost"]',
        'operations = ["count", "sum", "mean", "var"]',
    ]
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Procs:
    """Subprocesses started by one test; stopped by PID."""

    directory: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start ``python -m privcomp.cli.main ARGS``."""
        log = (self.directory / f"{name}.log").open("ab")
        p = subprocess.Popen(
            [sys.executable, "-m", "privcomp.cli.main", "-v", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        log.close()
        self.procs[name] = p
        return p

    def address(self, name: str, timeout: float = 20.0) -> str:
        """Wait for ``<name>.addr``."""
        address = read_port_file(self.directory / f"{name}.addr", self.procs[name], timeout)
        if address is not None:
            return address
        raise RuntimeError(f"{name} did not start: {self.log(name)}")

    def log(self, name: str) -> str:
        """Tail of a process log."""
        p = self.directory / f"{name}.log"
        return p.read_text()[-3000:] if p.exists() else ""

    def start_coordinator(self, pki_dir: Path, *extra: str, name: str = "coordinator") -> str:
        """Start a coordinator on port 0; return its address."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{name}.addr").unlink()
        self.start(
            name,
            [
                "coordinator",
                "--pki",
                str(pki_dir),
                "--db",
                "jobs.db",
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                f"{name}.addr",
                *extra,
            ],
        )
        return self.address(name)

    def start_worker(self, name: str, coordinator: str, pki_dir: Path, **extra: Any) -> str:
        """Start a worker; return its address."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{name}.addr").unlink()
        cfg = worker_toml(self.directory, name, coordinator, pki_dir, **extra)
        self.start(name, ["worker", str(cfg), "--port-file", f"{name}.addr"])
        return self.address(name)

    def signal(self, name: str, sig: int) -> None:
        """Send a signal to one process (by PID)."""
        os.kill(self.procs[name].pid, sig)

    def stop_all(self) -> None:
        """SIGCONT+SIGTERM all, wait 8 s, SIGKILL stragglers."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
        end = time.monotonic() + 8
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Per-test subprocess registry with guaranteed cleanup."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
        for name in p.procs:  # shown by pytest only when the test failed
            print(f"----- {name} log -----\n{p.log(name)}")


class LoopThread:
    """An asyncio loop in a daemon thread, for in-process servers used from sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a plain function on the loop thread."""

        async def wrap() -> Any:
            return fn()

        return self.run(wrap())

    def close(self) -> None:
        """Stop the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """A background event loop (closed after the test)."""
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


def wait_parties(fed: Any, names: tuple[str, ...] | list[str], timeout: float = 20.0) -> None:
    """Wait until the coordinator lists every name."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if set(names) <= set(fed.parties()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"parties {names} did not register")
