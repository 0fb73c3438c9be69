"""Run an SPMD program for N parties in one process on the in-memory network.

``simulate`` is the notebook-friendly entry point: each party runs ``program(ctx, inputs[i])``
as an asyncio task, with the same protocol code that runs between real workers. In Jupyter an
event loop is already running, so the synchronous façade runs its own loop in a helper thread.

Examples
--------
>>> import numpy as np
>>> import privcomp as pc
>>> async def program(ctx, x):
...     xs = await ctx.input(x)
...     return await (xs[0] + xs[1]).reveal()
>>> pc.simulate(program, [np.ones(2), np.ones(2)], triples="dealer")  # doctest: +SKIP
[array([2., 2.]), array([2., 2.])]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from privcomp.core.fixedpoint import FixedPoint
from privcomp.core.rng import RandomSource, SystemRandomSource
from privcomp.errors import ConfigurationError, ProtocolAbort, RoundTimeoutError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.triples import TripleSource
from privcomp.transport.memory import InMemoryNetwork

#: Receive deadline of a simulation, in seconds. Generous because HE preprocessing of large
#: arrays keeps peers waiting for minutes; a failing party aborts the others at once anyway.
SIMULATE_ROUND_TIMEOUT = 300.0

#: ``program(ctx, party_input) -> result``, run once by every party.
Program: TypeAlias = Callable[[PartyContext, Any], Awaitable[Any]]
#: ``factory(n_parties)`` returns one source shared by all parties, or one per party.
TripleFactory: TypeAlias = Callable[[int], "TripleSource | Sequence[TripleSource]"]


def _sources(
    triples: str | TripleSource | TripleFactory, n: int, rng: RandomSource | None
) -> list[TripleSource]:
    made: TripleSource | Sequence[TripleSource]
    if triples == "he":
        # Imported here: the HE source pulls in the Paillier engine, needed only when used.
        from privcomp.protocols.he_triples import PaillierTripleSource

        made = PaillierTripleSource()
    elif triples == "dealer":
        made = TrustedDealer(n, rng=rng)
    elif isinstance(triples, str):
        raise ConfigurationError(f"triples must be 'he', 'dealer' or a factory, got {triples!r}")
    elif isinstance(triples, TripleSource):
        made = triples
    elif callable(triples):
        made = triples(n)
    else:
        raise ConfigurationError("triples must be 'he', 'dealer', a TripleSource or a factory")
    if isinstance(made, TripleSource):
        return [made] * n
    sources = list(made)
    if len(sources) != n:
        raise ConfigurationError(f"triple factory returned {len(sources)} sources for {n} parties")
    return sources


def _root_cause(errors: list[BaseException]) -> BaseException:
    """The error that started the failure: not the aborts and timeouts it caused in the others."""
    for exc in errors:
        if not isinstance(exc, ProtocolAbort | RoundTimeoutError):
            return exc
    for exc in errors:
        if isinstance(exc, RoundTimeoutError):
            return exc
    return errors[0]


async def simulate_async(
    program: Program,
    inputs: Sequence[Any],
    *,
    triples: str | TripleSource | TripleFactory = "he",
    frac_bits: int = 16,
    delay: float | None = None,
    reorder: bool = False,
    rng: RandomSource | None = None,
    timeout: float = SIMULATE_ROUND_TIMEOUT,  # noqa: ASYNC109 (a per-receive deadline)
) -> list[Any]:
    """Run ``program`` for ``len(inputs)`` parties on an in-memory network (async form).

    Parameters
    ----------
    program:
        ``async def program(ctx, x)``; party ``i`` receives ``inputs[i]``.
    inputs:
        One input per party (at least 2).
    triples:
        ``"he"`` (default: Paillier-generated, no third party), ``"dealer"`` (an explicit
        :class:`TrustedDealer`, which must not collude with any party), a TripleSource shared by
        all parties, or a factory ``f(n_parties)`` returning one source or one per party.
    frac_bits:
        Fractional bits of the fixed-point encoding.
    delay, reorder:
        Random delivery delays (seconds) and reordering, to test order-independence.
    rng:
        Randomness for parties, dealer and delays (default: the OS CSPRNG). Pass
        :class:`~privcomp.core.rng.InsecureSeededRandom` only in tests.
    timeout:
        Deadline of every receive, in seconds (:class:`RoundTimeoutError`); default 300 s.

    Returns
    -------
    list
        Each party's return value, in party order.

    Raises
    ------
    Exception
        The first party's own error (e.g. ``EncodingError`` for a NaN input); the others are
        aborted at once with :class:`ProtocolAbort` instead of waiting for the deadline.
    """
    n = len(inputs)
    if n < 2:
        raise ConfigurationError(f"simulate needs at least 2 parties, got {n}")
    net = InMemoryNetwork(n, delay=delay, reorder=reorder, rng=rng, timeout=timeout)
    sources = _sources(triples, n, rng)
    fixed = FixedPoint(frac_bits)
    ctxs = [
        PartyContext(
            transport=net.transports[i],
            triples=sources[i],
            rng=rng if rng is not None else SystemRandomSource(),
            fixed=fixed,
            job_id="simulate",
        )
        for i in range(n)
    ]

    async def run(i: int) -> Any:
        try:
            return await program(ctxs[i], inputs[i])
        except BaseException as exc:
            net.abort(i, type(exc).__name__)
            raise

    results = await asyncio.gather(*(run(i) for i in range(n)), return_exceptions=True)
    await net.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise _root_cause(errors)
    return list(results)


def simulate(
    program: Program,
    inputs: Sequence[Any],
    *,
    triples: str | TripleSource | TripleFactory = "he",
    frac_bits: int = 16,
    delay: float | None = None,
    reorder: bool = False,
    rng: RandomSource | None = None,
    timeout: float = SIMULATE_ROUND_TIMEOUT,
) -> list[Any]:
    """Run ``program`` for ``len(inputs)`` parties and return each party's result.

    Synchronous façade of :func:`simulate_async` (same parameters). Works in scripts and in
    Jupyter: if an event loop is already running in this thread, the simulation runs on a
    fresh loop in a helper thread.

    Examples
    --------
    >>> async def program(ctx, x):
    ...     xs = await ctx.input(x)
    ...     return await (xs[0] * 2 + xs[1]).reveal()
    >>> simulate(program, [np.arange(3), np.ones(3)], triples="dealer")  # doctest: +SKIP
    """
    coro_args: dict[str, Any] = {
        "triples": triples,
        "frac_bits": frac_bits,
        "delay": delay,
        "reorder": reorder,
        "rng": rng,
        "timeout": timeout,
    }
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(simulate_async(program, inputs, **coro_args))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="privcomp-sim") as pool:
        return pool.submit(asyncio.run, simulate_async(program, inputs, **coro_args)).result()


__all__ = ["Program", "TripleFactory", "simulate", "simulate_async"]
