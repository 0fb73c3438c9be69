"""The ``privcomp`` command line (layer: cli).

The only place that reads argv and environment variables, configures logging and picks exit
codes. Exit codes: 0 success; 1 a job FAILED or was CANCELLED (or the demo's figures disagree);
2 usage error; 3 configuration error; 4 a service is unreachable or refused the credentials;
130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from privcomp.errors import (
    AuthenticationError,
    ConfigurationError,
    DeadlineExceededError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    PermissionDeniedError,
    PrivcompError,
    ServiceUnavailableError,
)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_JOB_FAILED, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 1, 3, 4, 130


def _fail(exc: BaseException) -> None:
    if isinstance(exc, ConfigurationError | JobNotFoundError | JobStateError):
        code = EXIT_CONFIG
    elif isinstance(exc, JobFailedError):
        code = EXIT_JOB_FAILED
    elif isinstance(
        exc,
        ServiceUnavailableError
        | AuthenticationError
        | PermissionDeniedError
        | DeadlineExceededError,
    ):
        code = EXIT_UNAVAILABLE
    else:
        code = EXIT_JOB_FAILED
    click.echo(f"error: {exc}", err=True)
    sys.exit(code)


def _guard(fn: F) -> F:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrivcompError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        return None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """privcomp: joint statistics over data that never leaves its owners."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _conn_options(fn: F) -> F:
    fn = click.option(
        "--coordinator",
        envvar="PRIVCOMP_COORDINATOR",
        required=True,
        help="host:port of the coordinator [env PRIVCOMP_COORDINATOR]",
    )(fn)
    fn = click.option(
        "--pki",
        "pki_dir",
        envvar="PRIVCOMP_PKI",
        default="pki",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="directory from `privcomp certs` [env PRIVCOMP_PKI]",
    )(fn)
    return click.option(
        "--analyst",
        envvar="PRIVCOMP_ANALYST",
        required=True,
        help="your analyst name [env PRIVCOMP_ANALYST]",
    )(fn)


def _connect(coordinator: str, pki_dir: Path, analyst: str) -> Any:
    from privcomp.client import connect

    return connect(coordinator, pki_dir=pki_dir, analyst=analyst)


@cli.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default="pki",
    show_default=True,
    help="Output directory.",
)
@click.option("--party", "parties", multiple=True, required=True, help="Party name (repeat).")
@click.option("--analyst", "analysts", multiple=True, help="Analyst name (repeat).")
@_guard
def certs(out: Path, parties: tuple[str, ...], analysts: tuple[str, ...]) -> None:
    """Create a development CA, certificates and tokens."""
    from privcomp.rpc.pki import create_pki

    ids = create_pki(out, list(parties), list(analysts))
    click.echo(f"wrote CA and {len(ids)} identities to {out}: {', '.join(sorted(ids))}")
    click.echo("keep *.key and *.token private; give each party its own files and ca.pem")


@cli.command()
@click.option(
    "--pki",
    "pki_dir",
    default="pki",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--db",
    "db_path",
    default="privcomp-jobs.db",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite job store.",
)
@click.option("--listen", default="127.0.0.1:7000", show_default=True)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bound host:port here (useful with port 0).",
)
@click.option("--insecure-dev", is_flag=True, help="Plaintext on loopback only (development).")
@click.option(
    "--keepalive-ms",
    default=10_000,
    show_default=True,
    help="Keepalive ping interval towards workers.",
)
@click.option(
    "--ping-timeout-ms",
    default=5_000,
    show_default=True,
    help="A worker that does not answer a ping within this time is considered hung.",
)
@_guard
def coordinator(
    pki_dir: Path,
    db_path: Path,
    listen: str,
    port_file: Path | None,
    insecure_dev: bool,
    keepalive_ms: int,
    ping_timeout_ms: int,
) -> None:
    """Run the coordinator until SIGTERM/Ctrl-C."""
    from privcomp.rpc.channel import Keepalive
    from privcomp.services.config import CoordinatorConfig
    from privcomp.services.server import serve_coordinator

    ka = Keepalive(
        time_ms=keepalive_ms, timeout_ms=ping_timeout_ms, ping_timeout_ms=ping_timeout_ms
    )
    cfg = CoordinatorConfig(
        listen=listen, pki_dir=pki_dir, db_path=db_path, insecure_dev=insecure_dev, keepalive=ka
    )
    asyncio.run(serve_coordinator(cfg, port_file))


@cli.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_guard
def worker(config: Path, port_file: Path | None) -> None:
    """Run a party's worker from a TOML/YAML CONFIG until SIGTERM/Ctrl-C."""
    # The Paillier engine forks helper processes that only do gmpy2 arithmetic; gRPC's own
    # fork handlers (on by default) abort such a child while the server's threads are busy.
    # Must be set before grpc is first imported.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from privcomp.services.config import read_mapping, worker_config_from_mapping
    from privcomp.services.server import serve_worker

    cfg = worker_config_from_mapping(read_mapping(config), config.resolve().parent)
    asyncio.run(serve_worker(cfg, port_file))


@cli.command()
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--watch/--no-watch", default=True, show_default=True)
@_conn_options
@_guard
def submit(job_file: Path, watch: bool, coordinator: str, pki_dir: Path, analyst: str) -> None:
    """Submit JOB_FILE (YAML) and, by default, follow it to the end."""
    with _connect(coordinator, pki_dir, analyst) as fed:
        job = fed.submit(job_file)
        click.echo(f"submitted job {job.job_id}")
        if watch:
            info = job.watch()
            click.echo(
                f"job {job.job_id}: {info.state.value}"
                + (
                    f" — {info.reason} (party {info.failing_party}, phase {info.phase})"
                    if info.reason
                    else ""
                )
            )
            if info.state.value != "SUCCEEDED":
                sys.exit(EXIT_JOB_FAILED)
            _print_result(job.result(), job_file)


def _print_result(result: dict[str, Any], job_file: Path | None = None) -> None:
    from privcomp.client import JobSpec, stats_tables

    spec = JobSpec.from_yaml(job_file) if job_file is not None else None
    if spec is not None and spec.kind == "stats_query":
        # A statistics query prints as pandas tables, as the Python API shows it.
        import pandas as pd

        with pd.option_context("display.width", 120, "display.max_columns", 50):
            for title, table in stats_tables(spec, result):
                click.echo(f"\n{title}:\n{table.to_string()}")
        return
    width = max((len(k) for k in result), default=0)
    for name, value in sorted(result.items()):
        click.echo(f"  {name:<{width}}  {value.tolist()}")


@cli.command()
@click.argument("job_id", required=False)
@_conn_options
@_guard
def status(job_id: str | None, coordinator: str, pki_dir: Path, analyst: str) -> None:
    """Status of JOB_ID, or of your recent jobs."""
    with _connect(coordinator, pki_dir, analyst) as fed:
        infos = [fed.status(job_id)] if job_id else fed.jobs()
        for i in infos:
            extra = f"  {i.reason} (party {i.failing_party or '-'})" if i.reason else ""
            click.echo(
                f"{i.job_id}  {i.kind:<10} {i.state.value:<10} {i.phase:<10} "
                f"{i.progress:5.0%}{extra}"
            )


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_conn_options
@_guard
def result(job_id: str, as_json: bool, coordinator: str, pki_dir: Path, analyst: str) -> None:
    """Released result of JOB_ID (waits for it to finish)."""
    with _connect(coordinator, pki_dir, analyst) as fed:
        res = fed.result(job_id)
    if as_json:
        click.echo(json.dumps({k: v.tolist() for k, v in res.items()}, indent=1))
    else:
        _print_result(res)


@cli.command()
@click.argument("job_id")
@_conn_options
@_guard
def cancel(job_id: str, coordinator: str, pki_dir: Path, analyst: str) -> None:
    """Cancel JOB_ID."""
    with _connect(coordinator, pki_dir, analyst) as fed:
        info = fed.cancel(job_id)
    click.echo(f"{job_id}: {info.state.value}")


@cli.command()
@_conn_options
@_guard
def parties(coordinator: str, pki_dir: Path, analyst: str) -> None:
    """Registered parties and their dataset schemas (names and types only)."""
    with _connect(coordinator, pki_dir, analyst) as fed:
        for p in fed.summaries():
            click.echo(f"{p.name}  {p.address}  {'online' if p.online else 'offline'}")
            for ds, cols in p.datasets.items():
                click.echo(f"    {ds}: " + ", ".join(f"{c} ({t})" for c, t in cols))


@cli.command()
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (logs, data, PKI).")
@_guard
def demo(no_progress: bool, keep: bool) -> None:
    """Start a local 3-party federation, run a joint job, compare with plaintext, clean up."""
    from privcomp.demo import run_demo

    t0 = time.monotonic()
    ok = run_demo(click.echo, progress=not no_progress, keep=keep)
    click.echo(
        ("all figures match the plaintext answers" if ok else "MISMATCH: see above")
        + f" ({time.monotonic() - t0:.1f} s)"
    )
    if not ok:
        sys.exit(EXIT_JOB_FAILED)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="privcomp")


if __name__ == "__main__":
    main()
