"""Fixed-point encoding: round-trip properties, refusals, and T05 (range/overflow enforcement)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privcomp.core.fixedpoint import DEFAULT_FRAC_BITS, FixedPoint
from privcomp.core.ring import ring_sum
from privcomp.core.rng import InsecureSeededRandom
from privcomp.core.sharing import reconstruct, share
from privcomp.errors import ConfigurationError, EncodingError, EncodingOverflowError

frac_bits = st.integers(0, 40)


@settings(max_examples=300, deadline=None)
@given(f=frac_bits, data=st.data())
def test_decode_encode_within_half_ulp(f: int, data: st.DataObject) -> None:
    fp = FixedPoint(f)
    bound = np.nextafter(fp.max_abs, 0.0)
    x = data.draw(
        hnp.arrays(
            np.float64,
            hnp.array_shapes(min_dims=0, max_dims=2, max_side=6),
            elements=st.floats(-bound, bound, allow_subnormal=True),
        )
    )
    enc = fp.encode(x)
    assert enc.dtype == np.uint64
    assert enc.shape == x.shape
    assert np.all(np.abs(fp.decode(enc) - x) <= 2.0 ** -(f + 1))  # ties round to even


@settings(max_examples=200, deadline=None)
@given(f=frac_bits, data=st.data())
def test_integer_input_is_exact(f: int, data: st.DataObject) -> None:
    fp = FixedPoint(f)
    lim = (1 << (62 - f)) - 1
    x = data.draw(hnp.arrays(np.int64, st.integers(0, 8), elements=st.integers(-lim, lim)))
    enc = fp.encode(x)
    np.testing.assert_array_equal(enc.view(np.int64), x * (1 << f))
    if lim < 2**53:
        np.testing.assert_array_equal(fp.decode(enc), x.astype(np.float64))


@pytest.mark.parametrize("f", [0, 16, 20, 40])
def test_t05_edge_values(f: int) -> None:
    fp = FixedPoint(f)
    top = np.nextafter(fp.max_abs, 0.0)  # the largest accepted float ("max")
    ok = np.array([top, -top, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.0])
    out = fp.decode(fp.encode(ok))
    np.testing.assert_array_equal(out[:2], [top, -top])  # exact at the top
    assert out[2:7].tolist() == [0.0] * 5  # subnormals and tiny normals encode to 0
    ilim = (1 << (62 - f)) - 1
    np.testing.assert_array_equal(
        fp.encode(np.array([ilim, -ilim], dtype=np.int64)).view(np.int64), [ilim << f, -ilim << f]
    )
    for bad in [
        fp.max_abs,
        -fp.max_abs,
        fp.max_abs + 1,
        -fp.max_abs - 1,
        1e300,
        -1e300,
        1.7976931348623157e308,
        -1.7976931348623157e308,
    ]:
        with pytest.raises(EncodingOverflowError) as exc:
            fp.encode(np.array([1.0, bad]), column="income")
        msg = str(exc.value)
        assert f"2^{62 - f}" in msg
        assert "'income'" in msg
        assert repr(bad) not in msg
        assert exc.value.bound == fp.max_abs
        assert exc.value.column == "income"
    for ibad in [ilim + 1, -ilim - 1, 2**63 - 1, -(2**63)]:
        with pytest.raises(EncodingOverflowError) as exc:
            fp.encode(np.array([ibad], dtype=np.int64))
        assert str(ibad) not in str(exc.value)
    with pytest.raises(EncodingOverflowError):
        fp.encode(np.array([2**64 - 1], dtype=np.uint64))


@settings(max_examples=200, deadline=None)
@given(f=frac_bits, mag=st.floats(1.0, 1e250), sign=st.sampled_from([1.0, -1.0]))
def test_t05_out_of_range_property(f: int, mag: float, sign: float) -> None:
    fp = FixedPoint(f)
    bad = sign * fp.max_abs * mag
    with pytest.raises(EncodingOverflowError) as exc:
        fp.encode([0.5, bad])
    assert repr(bad) not in str(exc.value)
    assert str(bad) not in str(exc.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_refused_without_value(bad: float) -> None:
    with pytest.raises(EncodingError) as exc:
        FixedPoint().encode(np.array([1.0, bad]), column="bmi")
    assert not isinstance(exc.value, EncodingOverflowError)
    assert "'bmi'" in str(exc.value)
    assert "inf" not in str(exc.value).replace("infinite", "")


@pytest.mark.parametrize(
    "bad", [np.array(["1.0"]), np.array([1 + 2j]), np.array([1, "x"], dtype=object), "3"]
)
def test_non_numeric_refused(bad: object) -> None:
    with pytest.raises(EncodingError):
        FixedPoint().encode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("f", [-1, 41])
def test_frac_bits_validated(f: int) -> None:
    with pytest.raises(ConfigurationError):
        FixedPoint(f)


def test_default_config() -> None:
    fp = FixedPoint()
    assert fp.frac_bits == DEFAULT_FRAC_BITS == 16
    assert fp.resolution == 2.0**-16
    assert fp.max_abs == 2.0**46
    assert fp.scale == 65536


def test_t05_sum_of_1e5_max_values_is_detected() -> None:
    # Each summand is valid, but the plaintext sum needs headroom the encoding does not have:
    # encoding the sum refuses, while a ring sum of the encodings wraps modulo 2^64 and decodes
    # to a wrong number. Protocol-level sums must therefore check n * max_abs < 2^(62-f)
    # before summing (documented hazard: the ring itself never detects overflow).
    fp, n = FixedPoint(16), 100_000
    top = np.nextafter(fp.max_abs, 0.0)
    x = np.full(n, top)
    enc = fp.encode(x)
    with pytest.raises(EncodingOverflowError):
        fp.encode(np.array([x.sum()]))
    wrapped = fp.decode(ring_sum(enc))
    assert abs(float(wrapped) - x.sum()) > 0.5 * n * fp.max_abs  # silently wrong: hence the check


def test_t05_sum_of_1e5_values_with_headroom_is_accurate() -> None:
    # With the per-value bound chosen so that n * bound < 2^(62-f), the shared sum is exact to
    # within n * 2^-(f+1) (one rounding per value) of the plaintext sum.
    fp, n = FixedPoint(16), 100_000
    bound = fp.max_abs / n
    rng = InsecureSeededRandom(7)
    x = np.full(n, np.nextafter(bound, 0.0))
    x[::2] *= -1.0
    x[: n // 4] = np.nextafter(bound, 0.0)  # a large positive excess as well
    shares = share(fp.encode(x), 3, rng)
    total = fp.decode(ring_sum(reconstruct(shares)))
    ref = float(np.sum(x.astype(np.longdouble)))
    assert abs(float(total) - ref) <= n * 2.0**-17 + abs(ref) * 2.0**-52
