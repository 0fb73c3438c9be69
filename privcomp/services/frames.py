"""A worker's datasets as pandas DataFrames, loaded once and kept (layer: services).

``stats_query`` jobs run through :class:`~privcomp.policy.worker.PartyWorker`, which reads
DataFrames exactly like ``pc.local``. pandas (>= 3) parses CSV floats round-trip exactly, so a
value written by ``DataFrame.to_csv`` reads back bit-identical (the deployed results then equal
the local-mode results on the same file). Only schemas (column names and dtypes) ever
leave the worker. Each file is read once, at start (its schema is published) and kept: restart
the worker after changing a dataset file (its disclosure-control history refers to the rows).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

from privcomp.errors import ConfigurationError
from privcomp.services.config import DatasetConfig


def read_frame(path: Path) -> pd.DataFrame:
    """Read a CSV (header row) or Parquet file into a DataFrame (errors name the file only)."""
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigurationError(f"cannot read dataset file {path.name}") from exc
    if not isinstance(frame, pd.DataFrame):
        raise ConfigurationError(f"dataset file {path.name} is not a table")
    if frame.columns.has_duplicates:
        raise ConfigurationError(f"dataset file {path.name} has duplicate column names")
    frame.columns = [str(c) for c in frame.columns]
    return frame


class FrameStore(Mapping[str, pd.DataFrame]):
    """Dataset name → DataFrame, read on first use and cached (thread-safe loading).

    Parameters
    ----------
    datasets:
        The worker's configured datasets.
    """

    def __init__(self, datasets: Mapping[str, DatasetConfig]) -> None:
        self._config = dict(datasets)
        self._frames: dict[str, pd.DataFrame] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._config:
            raise KeyError(name)
        with self._lock:
            frame = self._frames.get(name)
            if frame is None:
                frame = read_frame(self._config[name].path)
                self._frames[name] = frame
            return frame

    def __contains__(self, name: object) -> bool:
        return name in self._config

    def __iter__(self) -> Iterator[str]:
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)

    def load(self, *names: str) -> None:
        """Read the named datasets now (call from a thread: parsing a big file takes seconds)."""
        for n in names:
            if n in self._config:
                self[n]

    def schemas(self) -> dict[str, list[tuple[str, str]]]:
        """Dataset name → [(column, dtype)] as pandas reads them (what the worker publishes)."""
        return {n: [(c, str(t)) for c, t in self[n].dtypes.items()] for n in self._config}
