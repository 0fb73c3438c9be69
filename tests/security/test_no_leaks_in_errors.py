"""T15 (protocol part): errors and logs never carry a value (reference/security.md §6).

Error paths are forced with inputs that contain *sentinel* values (a NaN next to a sentinel, an
out-of-range real, an out-of-range integer, a party that raises, a public operand out of range,
a corrupted message). Every exception raised in any party (with its whole cause/context chain)
and every log record captured at DEBUG must be free of every rendering of every sentinel:
decimal, repr, scientific, hex of the integer, ``float.hex``, the fixed-point ring word (decimal
and hex), and the raw little-endian bytes (hex, repr and latin-1). The detector is itself checked
on a leaky message of each form.
"""

from __future__ import annotations

import logging
import struct
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from privcomp.core.fixedpoint import FixedPoint
from privcomp.errors import (
    CodecError,
    EncodingError,
    EncodingOverflowError,
    PrivcompError,
    ProtocolError,
)
from privcomp.protocols.context import PartyContext
from privcomp.simulation import simulate_async

SENTINEL_REAL = 271828.18284  # in range: sits next to the bad value in the same array
SENTINEL_BIG = 79876543212345.25  # out of fixed-point range (2^46 at f = 16), not integral
SENTINEL_INT = (1 << 62) + 314159  # out of the ring-integer range
SENTINEL_OTHER = -161803.39887  # another party's (valid) input


def _forms(v: float | int) -> set[str]:
    """Every way a value could show up in a text."""
    out: set[str] = set()
    if isinstance(v, float):
        out |= {str(v), repr(v), float.hex(v), str(int(v)), str(np.float64(v))}
        out |= {f"{v:.{p}e}" for p in range(3, 13)}  # numpy prints arrays as 2.71828183e+05
        out |= {f"{v:.{p}f}" for p in range(1, 7)} | {f"{v:.{p}g}" for p in range(5, 13)}
        raw = struct.pack("<d", v)
        for k in (16, 20):
            word = int(np.round(v * 2.0**k)) % (1 << 64)
            out |= {str(word), hex(word), f"{word:x}", str(word - (1 << 64))}
        out.add(f"{int(v):x}")
    else:
        out |= {str(v), hex(v), f"{v:x}", f"{v:e}"}
        raw = (v % (1 << 64)).to_bytes(8, "little")
    out |= {raw.hex(), repr(raw)[2:-1], raw.decode("latin-1")}
    return {f for f in out if len(f) >= 5}  # short forms (e.g. "1e+16") match by chance


SENTINELS = (SENTINEL_REAL, SENTINEL_BIG, SENTINEL_INT, SENTINEL_OTHER)
FORMS = {s: _forms(s) for s in SENTINELS}


def leaks(text: str) -> list[str]:
    """The sentinel renderings found in ``text``."""
    return [f"{s!r} as {f!r}" for s, forms in FORMS.items() for f in forms if f in text]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [x for x in (e.__cause__, e.__context__) if x is not None]
        if isinstance(e, BaseExceptionGroup):
            stack += list(e.exceptions)


def _exception_text(exc: BaseException) -> str:
    parts = []
    for e in _chain(exc):
        parts += [str(e), repr(e), *map(repr, e.args), "".join(traceback.format_exception_only(e))]
        parts += [repr(v) for v in vars(e).values()] if hasattr(e, "__dict__") else []
    return "\n".join(parts)


def _log_text(records: list[logging.LogRecord]) -> str:
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(fmt.format(r) for r in records)


Program = Callable[[PartyContext, Any], Awaitable[Any]]


async def _run_failing(program: Program, inputs: list[Any]) -> list[BaseException]:
    """Run ``program``; return every party's exception (the root cause is re-raised by simulate,
    the others are collected here)."""
    errors: list[BaseException] = []

    async def wrapped(ctx: PartyContext, x: Any) -> Any:
        try:
            return await program(ctx, x)
        except BaseException as exc:
            errors.append(exc)
            raise

    with pytest.raises(PrivcompError) as info:
        await simulate_async(wrapped, inputs, triples="dealer", timeout=5)
    errors.append(info.value)
    return errors


async def _input_then_lt(ctx: PartyContext, x: Any) -> Any:
    xs = await ctx.input(x)
    return await (await xs[0].lt(xs[1])).reveal()


def _inputs(bad: Any) -> list[Any]:
    return [np.array([SENTINEL_REAL, 1.0]), np.array([SENTINEL_OTHER, 2.0]), bad]


async def _party_raises(ctx: PartyContext, x: Any) -> Any:
    xs = await ctx.input(x)
    if ctx.party_id == 1:
        raise ProtocolError(f"party {ctx.party_id} gave up after the input round")
    return await (await xs[0].mul(xs[2])).reveal()


async def _public_out_of_range(ctx: PartyContext, x: Any) -> Any:
    xs = await ctx.input(x)
    return await (xs[0] + SENTINEL_BIG).reveal()


async def _public_int_out_of_range(ctx: PartyContext, x: Any) -> Any:
    xs = await ctx.input(x)
    return await (xs[0] * np.array([SENTINEL_INT, 1], dtype=np.int64)).reveal()


async def _corrupt_message(ctx: PartyContext, x: Any) -> Any:
    xs = await ctx.input(x)
    if ctx.party_id == 2:  # sends a truncated opening that holds a sentinel word
        tag = f"{ctx._counter + 1}:open"
        word = np.array([int(np.round(SENTINEL_REAL * 2**16))], dtype=np.uint64)
        for p in ctx.peers:
            await ctx.transport.send(p, tag, b"PCA\x01\x01\x01" + b"\x07" + word.tobytes())
        return None
    return await (await xs[0].mul(xs[1])).reveal()


_OK = np.array([4.0, 5.0])
CASES: list[tuple[str, Program, list[Any], type[BaseException]]] = [
    ("nan", _input_then_lt, _inputs(np.array([np.nan, SENTINEL_REAL])), EncodingError),
    ("inf", _input_then_lt, _inputs(np.array([-np.inf, SENTINEL_OTHER])), EncodingError),
    ("real_range", _input_then_lt, _inputs(np.array([1.0, SENTINEL_BIG])), EncodingOverflowError),
    ("int_range", _input_then_lt, _inputs(np.array([SENTINEL_INT, 3])), EncodingOverflowError),
    ("party_raises", _party_raises, _inputs(_OK), ProtocolError),
    ("public_range", _public_out_of_range, _inputs(_OK), EncodingOverflowError),
    ("public_int_range", _public_int_out_of_range, _inputs(_OK), EncodingOverflowError),
    ("corrupt_message", _corrupt_message, _inputs(_OK), CodecError),
]


@pytest.mark.parametrize(
    ("name", "program", "inputs", "expected"), CASES, ids=[c[0] for c in CASES]
)
async def test_error_paths_leak_no_sentinel(
    name: str,
    program: Program,
    inputs: list[Any],
    expected: type[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = await _run_failing(program, inputs)
    assert isinstance(errors[-1], expected), name  # the root cause surfaced, typed
    assert len(errors) >= 2  # every party's error was collected (the root and its aborts)
    text = "\n".join(_exception_text(e) for e in errors)
    assert leaks(text) == [], name
    assert caplog.records, "the aborted job logs nothing: the log check would be vacuous"
    assert leaks(_log_text(caplog.records)) == [], name


def test_encoder_errors_name_the_column_not_the_value() -> None:
    fx = FixedPoint(16)
    for bad in (np.array([SENTINEL_REAL, np.nan]), np.array([SENTINEL_BIG, 0.0])):
        with pytest.raises(EncodingError) as info:
            fx.encode(bad, column="bmi")
        assert "bmi" in str(info.value)
        assert leaks(_exception_text(info.value)) == []


@pytest.mark.parametrize("sentinel", SENTINELS)
def test_detector_catches_each_rendering(sentinel: float | int) -> None:
    """Mutation check: a message that embeds any rendering of a sentinel is flagged."""
    for form in FORMS[sentinel]:
        assert leaks(f"party 2: bad value {form} in column 'x'"), form
    assert leaks(f"{sentinel}")
    assert leaks(f"{sentinel!r}")
    if isinstance(sentinel, float):
        assert leaks(f"{sentinel:.2f}")  # a rounded rendering
        if abs(sentinel) < 2**46:  # the fixed-point ring word of the value
            assert leaks(str(FixedPoint(16).encode(np.array([sentinel]))[0]))
    assert leaks(repr(ValueError(f"got {sentinel}")))


async def test_harness_catches_a_leaky_party(caplog: pytest.LogCaptureFixture) -> None:
    """Mutation check of the whole harness: a party that logs and raises with its value in the
    text is caught both in the collected exceptions and in the captured DEBUG records."""
    caplog.set_level(logging.DEBUG)
    leaky_log = logging.getLogger("privcomp.test_leaky")

    async def leaky(ctx: PartyContext, x: Any) -> Any:
        await ctx.input(x)
        if ctx.party_id == 0:
            leaky_log.debug("party %d: bad row %r", ctx.party_id, x)
            raise ProtocolError(f"bad value {x[0]}")
        return await ctx.recv_array(0, "never")

    errors = await _run_failing(leaky, _inputs(_OK))
    assert leaks("\n".join(_exception_text(e) for e in errors))
    assert leaks(_log_text(caplog.records))
