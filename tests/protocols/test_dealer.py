"""TrustedDealer: every kind of material reconstructs to the right relation; PRG; divergence."""

from __future__ import annotations

import inspect
from functools import reduce

import numpy as np
import pytest

from privcomp.backends.prg import AesCtrPrg, expand, new_seed
from privcomp.core.rng import InsecureSeededRandom, SystemRandomSource
from privcomp.errors import ConfigurationError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.triples import TripleSource
from privcomp.transport.memory import InMemoryNetwork


def _ctxs(n: int, dealer: TrustedDealer) -> list[PartyContext]:
    net = InMemoryNetwork(n)
    return [PartyContext(transport=t, triples=dealer) for t in net.transports]


def _add(xs: list[np.ndarray]) -> np.ndarray:
    return reduce(np.add, xs[1:], xs[0].copy())


def _xor(xs: list[np.ndarray]) -> np.ndarray:
    return reduce(np.bitwise_xor, xs[1:], xs[0].copy())


def test_prg_is_deterministic_and_continues_stream() -> None:
    seed = new_seed(SystemRandomSource())
    a = AesCtrPrg(seed)
    first, second = a.ring_elements((5,)), a.ring_elements((3, 2))
    both = expand(seed, (11,))
    np.testing.assert_array_equal(np.concatenate([first, second.ravel()]), both)
    assert second.shape == (3, 2)
    assert "seed" in repr(a)
    assert seed.hex() not in repr(a)
    with pytest.raises(ConfigurationError):
        AesCtrPrg(b"short")
    # Uniformity sanity: every top-byte bin is hit over 100k words (chi-square loose bound).
    words = expand(new_seed(SystemRandomSource()), (100_000,))
    counts = np.bincount((words >> np.uint64(56)).astype(np.int64), minlength=256)
    chi2 = float(((counts - 390.625) ** 2 / 390.625).sum())
    assert chi2 < 400  # 255 dof: p ~ 1e-8 at 400


@pytest.mark.parametrize("n", [2, 3, 5])
async def test_all_kinds_reconstruct(n: int) -> None:
    dealer = TrustedDealer(n, rng=InsecureSeededRandom(n))
    assert isinstance(dealer, TripleSource)
    ctxs = _ctxs(n, dealer)
    shape = (4, 3)

    mul = [await dealer.mul_triples(c, shape) for c in ctxs]
    a, b, c = (_add([getattr(t, f) for t in mul]) for f in "abc")
    np.testing.assert_array_equal(a * b, c)

    mm = [await dealer.matmul_triples(c, (2, 5), (5, 3)) for c in ctxs]
    a, b, c = (_add([getattr(t, f) for t in mm]) for f in "abc")
    np.testing.assert_array_equal(a @ b, c)

    ands = [await dealer.and_triples(c, shape) for c in ctxs]
    a, b, c = (_xor([getattr(t, f) for t in ands]) for f in "abc")
    np.testing.assert_array_equal(a & b, c)

    tr = [await dealer.trunc_pairs(c, shape, 16) for c in ctxs]
    r = _add([t.r for t in tr])
    np.testing.assert_array_equal(_add([t.r_msb for t in tr]), r >> np.uint64(63))
    low = (r & np.uint64((1 << 63) - 1)) >> np.uint64(16)
    np.testing.assert_array_equal(_add([t.r_low_shifted for t in tr]), low)

    eds = [await dealer.edabits(c, shape) for c in ctxs]
    np.testing.assert_array_equal(_add([e.r for e in eds]), _xor([e.r_bits for e in eds]))

    das = [await dealer.dabits(c, (1000,)) for c in ctxs]
    bit = _xor([d.b_xor for d in das])
    assert set(np.unique(bit).tolist()) == {0, 1}
    np.testing.assert_array_equal(_add([d.b for d in das]), bit)

    fans = [await dealer.and_fan_triples(c, shape, 2) for c in ctxs]
    a, b, c = (_xor([getattr(t, f) for t in fans]) for f in "abc")
    assert a.shape == shape
    assert b.shape == c.shape == (2, *shape)
    np.testing.assert_array_equal(a & b[0], c[0])
    np.testing.assert_array_equal(a & b[1], c[1])
    assert not np.array_equal(b[0], b[1])

    assert dealer.stats.requests == 7
    assert dealer.stats.bytes_dealt[0] == 7 * 16  # seed-compressed parties get 16 bytes/request


async def test_material_is_fresh_and_parties_may_interleave() -> None:
    dealer = TrustedDealer(2)
    c0, c1 = _ctxs(2, dealer)
    t0a = await dealer.mul_triples(c0, (8,))
    t0b = await dealer.mul_triples(c0, (8,))  # party 0 runs ahead
    t1a = await dealer.mul_triples(c1, (8,))
    t1b = await dealer.mul_triples(c1, (8,))
    np.testing.assert_array_equal((t0a.a + t1a.a) * (t0a.b + t1a.b), t0a.c + t1a.c)
    np.testing.assert_array_equal((t0b.a + t1b.a) * (t0b.b + t1b.b), t0b.c + t1b.c)
    assert not np.array_equal(t0a.a, t0b.a)


async def test_diverged_requests_raise() -> None:
    dealer = TrustedDealer(2)
    c0, c1 = _ctxs(2, dealer)
    await dealer.mul_triples(c0, (3,))
    with pytest.raises(ProtocolError):
        await dealer.mul_triples(c1, (4,))
    with pytest.raises(ConfigurationError):
        await TrustedDealer(3).mul_triples(c0, (3,))
    with pytest.raises(ConfigurationError):
        await dealer.trunc_pairs(c0, (3,), 0)


def test_dealer_name_and_repr() -> None:
    d = TrustedDealer(3)
    assert d.name == "trusted-dealer"
    assert repr(d) == "TrustedDealer(n_parties=3)"
    assert inspect.iscoroutinefunction(d.mul_triples)
