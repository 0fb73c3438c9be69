"""Both cores for large Paillier batches, with forked workers and no pickle (layer: backends).

Protocol
--------
1. The caller draws all randomness first and builds a closure ``compute(start, stop)`` over its
   inputs (ciphertexts, plaintexts, random bytes, key tables).
2. An anonymous shared mapping (``mmap(-1, count * width)``, ``MAP_SHARED``) is created, then
   ``workers - 1`` children are forked. Each child inherits the closure's memory, computes its
   slice and writes the results as fixed-width big-endian integers into the mapping, then leaves
   with ``os._exit`` (no interpreter clean-up, no ``atexit`` hooks of the parent).
3. The parent computes the first slice itself, waits for every child, and parses the rest.

Security: nothing is pickled or sent through a pipe; inputs travel by ``fork`` (copy-on-write
memory) and outputs are raw bytes in a mapping private to this process tree. Workers never draw
randomness themselves, so a forked random state can never be reused across workers.

Cost: a ``fork`` (page-table copy, ~1 ms per 100 MB of resident memory) and a byte
serialisation of each result (~1 µs); worthwhile above a few hundred modular exponentiations,
hence the per-operation thresholds used by the callers.

Caveat: forking a process that runs other threads is only safe because the children touch
nothing but gmpy2 arithmetic and the mapping; they never log, lock, or return into Python code of
the parent.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from functools import partial

import gmpy2

from privcomp.errors import ConfigurationError, ParallelWorkerError

Compute = Callable[[int, int], list[gmpy2.mpz]]
BytesCompute = Callable[[int, int], bytes]


def available_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, count: int, threshold: int) -> int:
    """Return how many processes to use for ``count`` items.

    ``None`` means automatic: every available core when ``count >= threshold``, else one.
    """
    if workers is None:
        chosen = available_cores() if count >= threshold else 1
    elif workers < 1:
        raise ConfigurationError("workers must be at least 1")
    else:
        chosen = workers
    if not hasattr(os, "fork"):  # pragma: no cover - not POSIX
        return 1
    return max(1, min(chosen, count))


def _bounds(count: int, workers: int) -> list[int]:
    step, extra = divmod(count, workers)
    out = [0]
    for w in range(workers):
        out.append(out[-1] + step + (1 if w < extra else 0))
    return out


#: Exit status of a worker whose ``compute`` raised :class:`ValueError` (rejected input).
_REJECTED = 3


def fork_child(work: Callable[[], int]) -> int:
    """Fork a child that runs ``work`` and exits with its status; return the child's pid.

    The child never returns into the parent's code (``os._exit``, no clean-up handlers): exit
    status ``work()``, :data:`REJECTED` if it raised :class:`ValueError` (input rejected), 1 if
    it raised anything else. Nothing crosses back but the status (results go through shared
    memory the caller set up before forking).
    """
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = work()
        except ValueError:
            status = _REJECTED
        except BaseException:  # reported through the exit status only
            status = 1
        finally:
            os._exit(status)
    return pid


#: Exit status of a child whose input was rejected (it raised ValueError).
REJECTED = _REJECTED


def _child(compute: BytesCompute, start: int, stop: int, buf: mmap.mmap, width: int) -> int:
    out = compute(start, stop)
    if len(out) != (stop - start) * width:
        return 1
    buf[start * width : stop * width] = out
    return 0


def fork_map_bytes(
    compute: BytesCompute, count: int, width: int, workers: int
) -> tuple[bytes, float]:
    """Return ``compute(0, count)`` split over ``workers`` forked processes, and their CPU time.

    Parameters
    ----------
    compute:
        ``compute(start, stop)`` returns ``(stop - start) * width`` bytes for items
        ``start .. stop - 1``.
    count, width, workers:
        Number of items, bytes per item, processes (the caller included; ``1`` runs inline).

    Returns
    -------
    tuple of (bytes, float)
        The concatenated results and the CPU seconds spent by the children.

    Raises
    ------
    ValueError
        If ``compute`` raised :class:`ValueError` in a worker (input rejected), as inline.
    ParallelWorkerError
        If a worker dies or fails otherwise.
    """
    if workers <= 1 or count < 2:
        return compute(0, count), 0.0
    bounds = _bounds(count, workers)
    buf = mmap.mmap(-1, max(1, count * width))
    pids: list[int] = []
    statuses: list[int] = []
    child_cpu = 0.0
    try:
        for w in range(1, workers):
            lo, hi = bounds[w], bounds[w + 1]
            pids.append(fork_child(partial(_child, compute, lo, hi, buf, width)))
        head = compute(bounds[0], bounds[1])
    finally:
        for pid in pids:
            _, status, usage = os.wait4(pid, 0)
            statuses.append(os.waitstatus_to_exitcode(status))
            child_cpu += usage.ru_utime + usage.ru_stime
    try:
        if _REJECTED in statuses:
            raise ValueError("a worker rejected its input")
        if any(statuses):
            failed = sum(map(bool, statuses))
            raise ParallelWorkerError(f"{failed} of {workers - 1} worker processes failed")
        return head + buf[bounds[1] * width : count * width], child_cpu
    finally:
        buf.close()


def map_chunks(compute: Compute, count: int, width: int, workers: int) -> list[gmpy2.mpz]:
    """Return ``compute(0, count)``, split over ``workers`` forked processes.

    Parameters
    ----------
    compute:
        ``compute(start, stop)`` returns the results for items ``start .. stop - 1``; each result
        must be a non-negative integer below ``256**width``.
    count:
        Number of items.
    width:
        Bytes per result.
    workers:
        Number of processes (the caller included); ``1`` runs inline.

    Raises
    ------
    ParallelWorkerError
        If a worker dies or fails.
    """
    if workers <= 1 or count < 2:
        return compute(0, count)

    def as_bytes(start: int, stop: int) -> bytes:
        results = compute(start, stop)
        if len(results) != stop - start:
            raise ParallelWorkerError("a worker returned the wrong number of results")
        return b"".join(gmpy2.mpz(v).to_bytes(width, "big") for v in results)

    blob, _ = fork_map_bytes(as_bytes, count, width, workers)
    from_bytes = gmpy2.mpz.from_bytes
    return [from_bytes(blob[i : i + width], "big") for i in range(0, count * width, width)]
