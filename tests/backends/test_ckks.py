"""CKKS engine on TenSEAL: presets and the 128-bit bound (T07), accuracy against numpy float64
on random and real data (T08), serialise/reload "duplicate" axis, public contexts, and release
hygiene (T09: rounded, noise-flooded, capped per key).

Frozen tolerance (calibrated once, 2026-11): for inputs in [-1, 1] every result must lie within
the preset's documented ``error_for(|result|) = error_bound + rel_error_bound * |result|`` of
the float64 answer (n8192: 2^-14 ~ 6.1e-5 absolute, about 10x the largest error measured for a
4096-long dot product, 6.4e-6; plus 2^-20 relative, from TenSEAL snapping the scale back to 2^40
after each rescale while the 40-bit primes differ from 2^40 by up to 6.7e-7).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("tenseal")

from sklearn.datasets import load_diabetes

from privcomp import ckks
from privcomp.backends.ckks import wire
from privcomp.backends.ckks.release import flood_half_width
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import (
    BackendUnavailableError,
    CodecError,
    ConfigurationError,
    DecryptionBudgetExceededError,
    EncodingError,
    EncodingOverflowError,
    InsecureParameterError,
    InvalidCiphertextError,
    MissingSecretKeyError,
    PrivcompError,
)

pytestmark = pytest.mark.ckks

TOL = ckks.PRESETS["n8192"].error_bound  # frozen: 2^-14


def tol(want: np.ndarray | float) -> float:
    """Frozen n8192 tolerance for a result of this magnitude."""
    return ckks.PRESETS["n8192"].error_for(float(np.abs(want).max()))


@pytest.fixture(scope="module")
def ctx() -> ckks.CKKSContext:
    return ckks.context("n8192", rng=InsecureSeededRandom(7))


@pytest.fixture(scope="module")
def pub(ctx: ckks.CKKSContext) -> ckks.CKKSContext:
    return ctx.public()


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2026)
    n = 4096
    return {
        "x": rng.uniform(-1, 1, n),
        "y": rng.uniform(-1, 1, n),
        "m": rng.uniform(-1, 1, (n, 16)),
    }


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    features, target = load_diabetes(return_X_y=True)
    return features, target / 400.0  # target in [0.06, 0.87]; features already in [-0.2, 0.2]


# --- lazy import and missing extra ---------------------------------------------------------------


def test_import_is_lazy() -> None:
    code = "import sys, privcomp.ckks; print('tenseal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_tenseal_raises_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tenseal", None)  # makes `import tenseal` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install privcomp\[ckks\]"):
        ckks.context("n4096")


# --- T07: parameter bound ------------------------------------------------------------------------

BOUNDS = [(4096, 109), (8192, 218), (16384, 438), (32768, 881)]


@pytest.mark.parametrize(("n", "bound"), BOUNDS)
def test_bound_table(n: int, bound: int) -> None:
    assert ckks.HE_STD_128_MAX_BITS[n] == bound
    ckks.check_security(n, bound)  # at the bound: accepted
    with pytest.raises(InsecureParameterError, match=rf"N={n}") as info:
        ckks.check_security(n, bound + 1)
    assert str(bound) in str(info.value)


def test_t07_n8192_219_bits_refused() -> None:
    with pytest.raises(InsecureParameterError, match=r"218 bits for N=8192"):
        ckks.context(
            poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60, 19], scale_bits=40
        )


def test_unknown_degree_and_preset_refused() -> None:
    with pytest.raises(InsecureParameterError, match="N=1000"):
        ckks.check_security(1000, 20)
    with pytest.raises(ConfigurationError, match="unknown CKKS preset"):
        ckks.context("n9999")


@pytest.mark.parametrize("name", sorted(ckks.PRESETS))
def test_presets_within_bound(name: str) -> None:
    p = ckks.PRESETS[name]
    assert p.total_bits <= ckks.HE_STD_128_MAX_BITS[p.poly_modulus_degree]
    assert p.scale == 2.0**p.scale_bits


def test_forged_context_header_refused_before_parsing(ctx: ckks.CKKSContext) -> None:
    header = wire.Header(
        kind=wire.KIND_CONTEXT,
        poly_modulus_degree=8192,
        total_bits=219,
        scale_bits=40,
        prime_bits=(60, 40, 40, 60, 19),
    )
    with pytest.raises(InsecureParameterError, match="N=8192"):
        ckks.context_from_bytes(wire.pack(header, b"not even tenseal"))


def test_custom_parameters_accepted() -> None:
    c = ckks.context(poly_modulus_degree=8192, coeff_mod_bit_sizes=[50, 30, 50], scale_bits=30)
    assert c.params.name == "custom"
    assert c.params.total_bits == 130
    x = np.random.default_rng(3).uniform(-1, 1, 100)
    assert np.abs(c.decrypt(c.encrypt(x) * x) - x * x).max() <= c.params.error_bound


# --- public contexts -----------------------------------------------------------------------------


def test_public_context_has_no_secret_key(ctx: ckks.CKKSContext, pub: ckks.CKKSContext) -> None:
    assert ctx.is_private  # exporting copied first: the key holder keeps its key
    assert not pub.is_private
    assert not pub.ts_context.has_secret_key()
    assert pub.has_galois_keys
    assert pub.key_id == ctx.key_id
    reloaded = ckks.context_from_bytes(pub.to_bytes())
    assert not reloaded.is_private
    assert not reloaded.ts_context.has_secret_key()


def test_public_context_without_galois_keys_is_small(ctx: ckks.CKKSContext) -> None:
    slim = ctx.public(galois_keys=False)
    assert not slim.is_private
    assert not slim.has_galois_keys
    assert len(slim.to_bytes()) < 4_000_000  # ~1.9 MB against ~35 MB with Galois keys
    with pytest.raises(ConfigurationError, match="Galois"):
        slim.encrypt(np.ones(8)).matmul_plain(np.ones((8, 2)))
    with pytest.raises(ConfigurationError, match="Galois"):
        slim.encrypt(np.ones(8)).dot(np.ones(8))


def test_public_context_cannot_decrypt(ctx: ckks.CKKSContext, pub: ckks.CKKSContext) -> None:
    v = pub.encrypt([1.0, 2.0])
    used = ctx.releases_used
    with pytest.raises(MissingSecretKeyError) as info:
        pub.decrypt(v)
    assert isinstance(info.value, PrivcompError)
    with pytest.raises(MissingSecretKeyError):
        pub.decrypt_release(v, decimals=2)
    with pytest.raises(MissingSecretKeyError):
        pub.to_bytes(secret_key=True)
    assert ctx.releases_used == used
    np.testing.assert_allclose(ctx.decrypt(v), [1.0, 2.0], atol=TOL)


# --- T08: accuracy against numpy float64 ---------------------------------------------------------


def _roundtrip_vec(v: ckks.CKKSVector, ctx: ckks.CKKSContext) -> ckks.CKKSVector:
    return ckks.vector_from_bytes(v.to_bytes(), ctx)


DUPLICATES: dict[str, Callable[[ckks.CKKSVector, ckks.CKKSContext], ckks.CKKSVector]] = {
    "same": lambda v, _ctx: v,
    "bytes": _roundtrip_vec,
}


@pytest.fixture(scope="module", params=["private", "public", "public-reloaded"])
def evaluator(
    request: pytest.FixtureRequest, ctx: ckks.CKKSContext, pub: ckks.CKKSContext
) -> ckks.CKKSContext:
    """The context that encrypts and computes; the key holder decrypts (serialise axis)."""
    if request.param == "private":
        return ctx
    if request.param == "public":
        return pub
    return ckks.context_from_bytes(pub.to_bytes())


def _decrypt(ctx: ckks.CKKSContext, v: ckks.CKKSVector) -> np.ndarray:
    back = ckks.vector_from_bytes(v.to_bytes(), ctx) if v.context is not ctx else v
    out = ctx.decrypt(back)
    assert out.dtype == np.float64
    assert isinstance(out, np.ndarray)
    return out


@pytest.mark.parametrize("dup", sorted(DUPLICATES))
def test_elementwise_accuracy(
    ctx: ckks.CKKSContext, evaluator: ckks.CKKSContext, data: dict[str, np.ndarray], dup: str
) -> None:
    x, y = data["x"], data["y"]
    d = DUPLICATES[dup]
    vx, vy = d(evaluator.encrypt(x), evaluator), d(evaluator.encrypt(y), evaluator)
    cases = {
        "add": (vx + vy, x + y),
        "sub": (vx - vy, x - y),
        "add_plain": (vx + y, x + y),
        "rsub_plain": (y - vx, y - x),
        "neg": (-vx, -x),
        "mul_ct": (vx * vy, x * y),
        "mul_plain": (vx * y, x * y),
        "mul_scalar": (0.5 * vx, 0.5 * x),
        "rmul_ndarray": (y * vx, x * y),
    }
    for name, (enc, want) in cases.items():
        got = _decrypt(ctx, d(enc, evaluator))
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= tol(want), name


@pytest.mark.parametrize("dup", sorted(DUPLICATES))
def test_dot_accuracy(
    ctx: ckks.CKKSContext, evaluator: ckks.CKKSContext, data: dict[str, np.ndarray], dup: str
) -> None:
    x, y = data["x"], data["y"]
    d = DUPLICATES[dup]
    vx, vy = d(evaluator.encrypt(x), evaluator), d(evaluator.encrypt(y), evaluator)
    for enc in (vx.dot(vy), vx.dot(y)):
        got = _decrypt(ctx, d(enc, evaluator))
        assert got.shape == (1,)
        assert abs(got[0] - x @ y) <= tol(x @ y)
    assert abs(_decrypt(ctx, vx.sum())[0] - x.sum()) <= tol(x.sum())


@pytest.mark.parametrize("dup", sorted(DUPLICATES))
def test_matmul_accuracy(
    ctx: ckks.CKKSContext, evaluator: ckks.CKKSContext, data: dict[str, np.ndarray], dup: str
) -> None:
    x, m = data["x"], data["m"]
    vx = DUPLICATES[dup](evaluator.encrypt(x), evaluator)
    got = _decrypt(ctx, DUPLICATES[dup](vx.matmul_plain(m), evaluator))
    assert got.shape == (16,)
    assert np.abs(got - x @ m).max() <= tol(x @ m)
    assert np.abs(_decrypt(ctx, vx @ m) - x @ m).max() <= tol(x @ m)


def test_matmul_methods_agree(ctx: ckks.CKKSContext, data: dict[str, np.ndarray]) -> None:
    x, m = data["x"][:64], data["m"][:64, :5]
    vx = ctx.encrypt(x)
    for method in ("diagonal", "dots", "tenseal"):
        got = ctx.decrypt(vx.matmul_plain(m, method=method))
        assert np.abs(got - x @ m).max() <= tol(x @ m), method
    with pytest.raises(ConfigurationError, match="unknown matmul method"):
        vx.matmul_plain(m, method="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "cols"), [(1, 1), (7, 3), (100, 1), (300, 33), (4096, 1)])
def test_matmul_shapes(ctx: ckks.CKKSContext, n: int, cols: int) -> None:
    rng = np.random.default_rng(n * 100 + cols)
    x, m = rng.uniform(-1, 1, n), rng.uniform(-1, 1, (n, cols))
    got = ctx.decrypt(ctx.encrypt(x).matmul_plain(m))
    assert got.shape == (cols,)
    assert np.abs(got - x @ m).max() <= tol(x @ m)


def test_matmul_sparse_and_zero(ctx: ckks.CKKSContext) -> None:
    x = np.linspace(-1, 1, 50)
    eye = np.zeros((50, 4))
    eye[[3, 10, 20, 49], [0, 1, 2, 3]] = 1.0  # most generalised diagonals are zero
    got = ctx.decrypt(ctx.encrypt(x).matmul_plain(eye))
    assert np.abs(got - x[[3, 10, 20, 49]]).max() <= TOL
    zero = ctx.decrypt(ctx.encrypt(x).matmul_plain(np.zeros((50, 3))))
    assert zero.shape == (3,)
    assert np.abs(zero).max() <= TOL


def test_matmul_result_composes(ctx: ckks.CKKSContext, data: dict[str, np.ndarray]) -> None:
    x, m = data["x"], data["m"]
    r = ctx.encrypt(x).matmul_plain(m)
    w = np.arange(16) / 16.0
    got = ctx.decrypt((r + w).dot(w))
    want = (x @ m + w) @ w
    assert abs(got[0] - want) <= 64 * tol(want)  # operands up to |x@m| ~ 60: B^2 rule


def test_real_data_diabetes(
    ctx: ckks.CKKSContext, pub: ckks.CKKSContext, diabetes: tuple[np.ndarray, np.ndarray]
) -> None:
    features, target = diabetes
    vt = ckks.vector_from_bytes(pub.encrypt(target).to_bytes(), pub)
    xty = ctx.decrypt(ckks.vector_from_bytes(vt.matmul_plain(features).to_bytes(), ctx))
    assert np.abs(xty - target @ features).max() <= tol(target @ features)
    col = features[:, 2]
    assert abs(ctx.decrypt(vt.dot(col))[0] - target @ col) <= tol(target @ col)
    vc = pub.encrypt(col)
    assert np.abs(ctx.decrypt(vt * vc + vc) - (target * col + col)).max() <= TOL
    assert abs(ctx.decrypt(vt.sum())[0] - target.sum()) <= tol(target.sum())


# --- errors --------------------------------------------------------------------------------------


def test_encoding_errors(ctx: ckks.CKKSContext) -> None:
    with pytest.raises(EncodingError, match="NaN"):
        ctx.encrypt([1.0, np.nan])
    with pytest.raises(EncodingError, match="1-D"):
        ctx.encrypt(np.ones((2, 2)))
    with pytest.raises(EncodingOverflowError) as info:
        ctx.encrypt([2.0**30])
    assert info.value.bound == ctx.max_abs_input
    with pytest.raises(ConfigurationError, match="shape"):
        ctx.encrypt([1.0, 2.0]) * np.ones(3)


def test_depth_exhaustion_is_typed(ctx: ckks.CKKSContext) -> None:
    v = ctx.encrypt([0.5, 0.5])
    w = v * v * v  # depth 2: what n8192 supports
    with pytest.raises(ConfigurationError, match="depth"):
        _ = w * v


def test_keys_are_not_mixed(ctx: ckks.CKKSContext) -> None:
    other = ckks.context("n8192", galois_keys=False)
    v, w = ctx.encrypt([1.0]), other.encrypt([1.0])
    with pytest.raises(ConfigurationError, match="different keys"):
        _ = v + w
    with pytest.raises(ConfigurationError, match="different key"):
        other.decrypt(v)
    with pytest.raises(InvalidCiphertextError, match="different key"):
        ckks.vector_from_bytes(v.to_bytes(), other)


def test_serialisation_errors(ctx: ckks.CKKSContext) -> None:
    blob = ctx.encrypt([1.0, 2.0]).to_bytes()
    with pytest.raises(CodecError, match="magic"):
        ckks.vector_from_bytes(b"XXXX" + blob[4:], ctx)
    with pytest.raises(CodecError):
        ckks.vector_from_bytes(blob[:-10], ctx)
    with pytest.raises(CodecError, match="kind"):
        ckks.context_from_bytes(blob)
    header, payload = wire.unpack(blob, wire.KIND_VECTOR)
    with pytest.raises(InvalidCiphertextError, match="parse"):
        ckks.vector_from_bytes(wire.pack(header, b"\x00" * len(payload)), ctx)


# --- T09: release hygiene ------------------------------------------------------------------------


class _CountingRandom(InsecureSeededRandom):
    def __init__(self) -> None:
        super().__init__(99)
        self.bytes_drawn = 0

    def random_bytes(self, n: int) -> bytes:
        self.bytes_drawn += n
        return super().random_bytes(n)


def test_release_is_rounded_noisy_and_bounded(data: dict[str, np.ndarray]) -> None:
    rng = _CountingRandom()
    ctx = ckks.context("n8192", galois_keys=False, rng=rng)
    x = data["x"]
    v = ctx.encrypt(x)
    drawn = rng.bytes_drawn
    decimals = 2
    r1 = ctx.decrypt_release(v, decimals=decimals)
    r2 = ctx.decrypt_release(v, decimals=decimals)
    assert rng.bytes_drawn - drawn == 2 * 8 * x.size  # flooding noise comes from the source
    err = ctx.params.error_for(1.0)
    h = flood_half_width(decimals, err, ckks.DEFAULT_FLOOD_BITS)
    assert h >= 2.0**8 * ctx.params.error_bound
    for r in (r1, r2):
        assert r.dtype == np.float64
        assert r.shape == x.shape
        np.testing.assert_array_equal(r, np.round(r, decimals))  # rounded to the declared grid
        assert np.abs(r - x).max() <= ctx.release_bound(decimals)
    assert np.abs(r1 - r2).max() <= 2 * h + 10.0**-decimals + 1e-12
    assert (r1 != r2).mean() > 0.3  # flooded: fresh noise each time
    raw = ctx.decrypt(v)
    spread = r1 - raw  # ~ Uniform[-h, h] plus rounding: mean ~ 0, std ~ h / sqrt(3)
    assert abs(spread.mean()) < 0.1 * h
    assert 0.8 * h / np.sqrt(3) < spread.std() < 1.2 * h / np.sqrt(3) + 0.003


def test_release_coarse_precision_is_exact_grid(ctx: ckks.CKKSContext) -> None:
    v = ctx.encrypt(np.array([0.25, 1.0, 3.0]))
    got = ctx.decrypt_release(v, decimals=0)  # h = 1: noise up to one unit, then round
    assert np.abs(got - [0.25, 1.0, 3.0]).max() <= ctx.release_bound(0)
    np.testing.assert_array_equal(got, np.round(got))


def test_release_cap_enforced_and_survives_reload() -> None:
    ctx = ckks.context("n4096", galois_keys=False, release_cap=3)
    v = ctx.encrypt([1.0, 2.0])
    for _ in range(2):
        ctx.decrypt_release(v, decimals=1)
    ctx.decrypt(v)  # raw decryptions stay local and are not counted
    assert (ctx.releases_used, ctx.releases_remaining) == (2, 1)
    backup = ckks.context_from_bytes(ctx.to_bytes(secret_key=True, galois_keys=False))
    assert backup.is_private
    assert (backup.releases_used, backup.release_cap) == (2, 3)
    ctx.decrypt_release(v, decimals=1)
    with pytest.raises(DecryptionBudgetExceededError, match="rotate the key"):
        ctx.decrypt_release(v, decimals=1)
    backup.decrypt_release(ckks.vector_from_bytes(v.to_bytes(), backup), decimals=1)
    with pytest.raises(DecryptionBudgetExceededError, match="cap of 3"):
        backup.decrypt_release(ckks.vector_from_bytes(v.to_bytes(), backup), decimals=1)


def test_release_arguments_validated(ctx: ckks.CKKSContext) -> None:
    v = ctx.encrypt([1.0])
    used = ctx.releases_used
    with pytest.raises(ConfigurationError, match="decimals"):
        ctx.decrypt_release(v, decimals=-1)
    with pytest.raises(ConfigurationError, match="flood_bits"):
        ctx.decrypt_release(v, decimals=2, flood_bits=-1)
    assert ctx.releases_used == used  # a refused call spends nothing


def test_default_cap_is_128() -> None:
    assert ckks.DEFAULT_RELEASE_CAP == 128
    assert ckks.context("n4096", galois_keys=False).release_cap == 128


def test_n4096_preset_accuracy() -> None:
    c = ckks.context("n4096")
    rng = np.random.default_rng(5)
    x, y, m = rng.uniform(-1, 1, 2048), rng.uniform(-1, 1, 2048), rng.uniform(-1, 1, (2048, 8))
    vx = c.encrypt(x)
    bound = c.params.error_for
    assert np.abs(c.decrypt(vx * y) - x * y).max() <= bound(1.0)
    assert abs(c.decrypt(vx.dot(y))[0] - x @ y) <= bound(x @ y)
    assert np.abs(c.decrypt(vx.matmul_plain(m)) - x @ m).max() <= bound(np.abs(x @ m).max())


def test_release_leaves_numpy_global_rng_alone() -> None:
    ctx = ckks.context("n4096", galois_keys=False)  # default source: the OS CSPRNG
    v = ctx.encrypt(np.linspace(-1, 1, 64))
    before = np.random.get_state()[1].copy()
    r1, r2 = ctx.decrypt_release(v, decimals=3), ctx.decrypt_release(v, decimals=3)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert not np.array_equal(r1, r2)
