"""Worker and coordinator configuration, and dataset loading (layer: services).

Configuration files are TOML (``.toml``) or YAML (``.yaml``/``.yml``). Example worker file::

    name = "hospital_a"
    listen = "127.0.0.1:0"
    coordinator = "127.0.0.1:7000"
    pki_dir = "pki"

    [datasets.patients]
    path = "hospital_a.csv"

    [policy]                       # privcomp.policy.model.Policy.from_dict
    k = 11
    [policy.datasets.patients]
    columns = ["age", "cost"]
    operations = ["count", "sum", "mean", "var"]

Optional worker settings include ``round_timeout_s`` (30), ``heartbeat_s`` (5) and
``max_pending_peer_bytes`` (2147483648 = 2 GiB): the most bytes peers may have sent for one job
that its protocol has not consumed yet. A peer whose message would cross it is refused
(RESOURCE_EXHAUSTED) and the job fails naming that party; raise it only for jobs whose single
rounds exceed 2 GiB.

Only schemas (column names and types) ever leave the worker; the rows stay in the file.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from privcomp.errors import ConfigurationError
from privcomp.jobs.kinds import LocalData
from privcomp.policy.model import Policy
from privcomp.rpc.channel import Keepalive
from privcomp.rpc.transport import DEFAULT_MAX_PENDING_BYTES
from privcomp.types import FloatArray


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetConfig:
    """A dataset a party offers (its rows never leave the worker)."""

    name: str
    path: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """Configuration of one party's worker."""

    name: str
    listen: str = "127.0.0.1:0"
    advertise: str = ""
    coordinator: str
    pki_dir: Path
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    allow_dealer: bool = False
    #: Dealer helper parties this (data-holding) worker accepts for ``triple_source: dealer``
    #: jobs; empty (the default) refuses dealer mode, as production configurations should.
    trusted_dealers: tuple[str, ...] = ()
    #: Processes for the PSI of a two-party join: 1 (default) in-process, 0 every core (the
    #: right choice when the worker has its host to itself).
    psi_workers: int = 1
    allow_benchmarks: bool = False
    insecure_dev: bool = False
    round_timeout_s: float = 30.0
    heartbeat_s: float = 5.0
    keepalive: Keepalive = field(default_factory=Keepalive)
    #: Cap on one job's peer bytes received but not yet consumed (default 2 GiB).
    max_pending_peer_bytes: int = DEFAULT_MAX_PENDING_BYTES

    def __post_init__(self) -> None:
        if self.max_pending_peer_bytes <= 0:
            raise ConfigurationError("max_pending_peer_bytes must be a positive number of bytes")
        if self.psi_workers < 0:
            raise ConfigurationError("psi_workers must be 0 (every core) or a number of processes")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorConfig:
    """Configuration of the coordinator."""

    listen: str = "127.0.0.1:0"
    pki_dir: Path
    db_path: Path
    insecure_dev: bool = False
    prepare_timeout_s: float = 15.0
    keepalive: Keepalive = field(default_factory=Keepalive)


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML file into a dict."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read config {path}: {exc.strerror}") from exc
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"invalid TOML in {path}: {exc}") from exc
    if path.suffix in (".yaml", ".yml"):
        import yaml  # type: ignore[import-untyped,unused-ignore]

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"invalid YAML in {path}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path} must contain a mapping")
        return data
    raise ConfigurationError(f"config {path} must end in .toml, .yaml or .yml")


def _names_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{what} must be a list of party names")
    return tuple(value)


# The config keys: WorkerConfig's fields, with the keepalive settings spelt out flat.
_KEEPALIVE_KEYS = ("keepalive_time_ms", "keepalive_timeout_ms", "ping_timeout_ms")
_WORKER_KEYS = frozenset(f.name for f in fields(WorkerConfig)) - {"keepalive"} | set(
    _KEEPALIVE_KEYS
)


def worker_config_from_mapping(data: dict[str, Any], base: Path) -> WorkerConfig:
    """Build a WorkerConfig; relative paths are relative to ``base`` (the config's directory).

    Unknown keys are refused: a misspelt security setting must not be silently ignored.
    """
    unknown = sorted(set(data) - _WORKER_KEYS)
    if unknown:
        raise ConfigurationError(f"unknown worker config keys: {unknown}")
    try:
        datasets = {
            name: DatasetConfig(name=name, path=(base / str(d["path"])).resolve())
            for name, d in dict(data.get("datasets", {})).items()
        }
        return WorkerConfig(
            name=str(data["name"]),
            listen=str(data.get("listen", "127.0.0.1:0")),
            advertise=str(data.get("advertise", "")),
            coordinator=str(data["coordinator"]),
            pki_dir=(base / str(data.get("pki_dir", "pki"))).resolve(),
            datasets=datasets,
            policy=Policy.from_dict(data.get("policy")),
            allow_dealer=bool(data.get("allow_dealer", False)),
            trusted_dealers=_names_list(data.get("trusted_dealers", []), "trusted_dealers"),
            psi_workers=int(data.get("psi_workers", 1)),
            allow_benchmarks=bool(data.get("allow_benchmarks", False)),
            insecure_dev=bool(data.get("insecure_dev", False)),
            round_timeout_s=float(data.get("round_timeout_s", 30.0)),
            heartbeat_s=float(data.get("heartbeat_s", 5.0)),
            max_pending_peer_bytes=int(
                data.get("max_pending_peer_bytes", DEFAULT_MAX_PENDING_BYTES)
            ),
            keepalive=Keepalive(
                time_ms=int(data.get("keepalive_time_ms", 10_000)),
                timeout_ms=int(data.get("keepalive_timeout_ms", 5_000)),
                ping_timeout_ms=int(data.get("ping_timeout_ms", 5_000)),
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid worker config: {exc!s}") from exc


def _column_type(values: list[str]) -> str:
    try:
        [int(v) for v in values]
        return "int64"
    except ValueError:
        pass
    try:
        [float(v) for v in values]
        return "float64"
    except ValueError:
        return "string"


def read_table(path: Path) -> dict[str, list[str]]:
    """Read a CSV (header row) or Parquet file into column name → raw values."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
        except ImportError as exc:
            raise ConfigurationError("reading Parquet needs pyarrow (pip install pyarrow)") from exc
        try:
            table = pq.read_table(path)
        except (OSError, ValueError, TypeError) as exc:  # ArrowInvalid is a ValueError
            raise ConfigurationError(f"cannot read dataset file {path.name}") from exc
        names = [str(n) for n in table.column_names]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"dataset file {path.name} has duplicate column names")
        return {
            n: [str(v) for v in c.to_pylist()] for n, c in zip(names, table.columns, strict=True)
        }
    try:
        # utf-8-sig: files saved by Excel start with a byte-order mark, which pandas strips too.
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"cannot read dataset file {path.name}") from exc
    if not rows:
        raise ConfigurationError(f"dataset file {path.name} is empty")
    header = rows[0]
    if len(set(header)) != len(header):
        raise ConfigurationError(f"dataset file {path.name} has duplicate column names")
    cols: dict[str, list[str]] = {h: [] for h in header}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigurationError(f"dataset file {path.name}: row {i} has the wrong width")
        for h, v in zip(header, row, strict=True):
            cols[h].append(v)
    return cols


def dataset_schema(path: Path) -> list[tuple[str, str]]:
    """Column names and types of a dataset (what the worker publishes)."""
    return [(name, _column_type(vals)) for name, vals in read_table(path).items()]


def load_columns(path: Path, columns: set[str]) -> LocalData:
    """Load the named numeric columns as float64 (errors name the column, never a value)."""
    table = read_table(path)
    out: dict[str, FloatArray] = {}
    for c in sorted(columns):
        if c not in table:
            raise ConfigurationError(f"column {c!r} is not in dataset file {path.name}")
        try:
            arr = np.asarray([float(v) for v in table[c]], dtype=np.float64)
        except ValueError as exc:
            raise ConfigurationError(f"column {c!r} is not numeric") from exc
        if not np.all(np.isfinite(arr)):
            raise ConfigurationError(f"column {c!r} contains NaN or infinite values")
        out[c] = arr
    return LocalData(columns=out)
