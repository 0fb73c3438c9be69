"""The wide-ring secure sum: exactness, overflow refused before sharing, nothing but shares sent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import EncodingError, EncodingOverflowError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.stats import (
    WIDE_BITS,
    WIDE_FRAC_BITS,
    decode_wide,
    encode_wide,
    secure_sum_floats,
    secure_sum_wide,
)
from privcomp.transport.memory import InMemoryNetwork


def _run(fn: Any, inputs: Sequence[Any], seed: int = 0) -> tuple[list[Any], InMemoryNetwork]:
    net = InMemoryNetwork(len(inputs))
    dealer = TrustedDealer(len(inputs))
    ctxs = [
        PartyContext(transport=t, triples=dealer, rng=InsecureSeededRandom(seed + i))
        for i, t in enumerate(net.transports)
    ]

    async def main() -> list[Any]:
        return await asyncio.gather(*(fn(c, x) for c, x in zip(ctxs, inputs, strict=True)))

    return asyncio.run(main()), net


@pytest.mark.parametrize("n", [2, 3, 5])
def test_secure_sum_wide_exact_near_the_limit(n: int) -> None:
    limit = (1 << (WIDE_BITS - 1)) // n
    rng = np.random.default_rng(n)
    inputs = [
        [limit - 1, -(limit - 1), int(rng.integers(-(2**62), 2**62)) << 150] for _ in range(n)
    ]
    results, _ = _run(secure_sum_wide, inputs)
    expected = [sum(col) for col in zip(*inputs, strict=True)]
    assert all(r == expected for r in results)


def test_overflow_detected_before_anything_is_sent() -> None:
    limit = (1 << (WIDE_BITS - 1)) // 3
    with pytest.raises(EncodingOverflowError) as info:
        _run(secure_sum_wide, [[limit], [0], [0]])
    assert "range" in str(info.value)
    assert info.value.bound is not None


def test_float_overflow_agreed_by_all_parties() -> None:
    big = np.array([2.0**142])
    with pytest.raises(EncodingOverflowError):
        _run(lambda c, x: secure_sum_floats(c, x, what="sum"), [big, np.zeros(1), np.zeros(1)])


def test_encoding_is_exact_for_float64() -> None:
    x = np.array([1e6, -3.25, 2.0**-60, 1e-17, 123456789.123456789, 0.0])
    assert np.array_equal(decode_wide(encode_wide(x)), x)
    assert encode_wide([0.5]) == [1 << (WIDE_FRAC_BITS - 1)]
    with pytest.raises(EncodingError):
        encode_wide([np.nan])


def test_sum_of_floats_is_the_exact_sum_rounded_once() -> None:
    vals = [np.array([1e16]), np.array([1.0]), np.array([-1e16])]
    results, _ = _run(lambda c, x: secure_sum_floats(c, x, what="sum"), vals)
    assert all(float(r[0]) == 1.0 for r in results)  # naive float summation gives 0.0


def test_wire_carries_no_local_aggregate() -> None:
    """Record every payload: no party's encoded pre-aggregate ever appears on the wire."""
    secrets = [[123456789 << 40, 987654321 << 40], [55555 << 60, 1], [77777 << 70, 2]]
    net = InMemoryNetwork(3)
    sent: list[bytes] = []
    for tr in net.transports:
        orig = tr.send

        async def spy(to: int, tag: str, payload: bytes, _orig: Any = orig) -> None:
            sent.append(payload)
            await _orig(to, tag, payload)

        tr.send = spy  # type: ignore[method-assign]
    dealer = TrustedDealer(3)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]

    async def main() -> list[list[int]]:
        return await asyncio.gather(
            *(secure_sum_wide(c, x) for c, x in zip(ctxs, secrets, strict=True))
        )

    results = asyncio.run(main())
    assert results[0] == [sum(c) for c in zip(*secrets, strict=True)]
    blob = b"".join(sent)
    for party in secrets:
        for v in party:
            assert v.to_bytes(32, "little") not in blob
    assert len(sent) == 3 * 2 * 2  # two rounds, each party to each peer
