"""T16 no pickle anywhere (reference/security.md §2.7, §6).

Static: an AST scan and a token scan of every ``privcomp/**/*.py`` (generated ``privcomp/proto/``
excluded) find no ``pickle``/``cPickle``/``dill``/``cloudpickle``/``marshal``/``shelve``/
``joblib``, no ``torch.load``, no ``pandas`` pickle I/O and no
``numpy.load(..., allow_pickle=True)``.
The scanners are checked on mutated sources.

Dynamic: the array codec refuses object dtypes, and a classic pickle payload (which would create
a file if it were ever unpickled) fed to every decoder of the protocol layer and to a running
protocol round is refused with a typed error, and the file is never created.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import privcomp
from privcomp.core.codec import array_from_bytes, array_to_bytes
from privcomp.errors import CodecError, PrivcompError
from privcomp.protocols.context import PartyContext, decode_ring
from privcomp.simulation import simulate_async

PKG = Path(privcomp.__file__).resolve().parent
EXCLUDED = (PKG / "proto",)
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"}
BANNED_MODULES |= {"joblib"}  # joblib persistence is pickle underneath
BANNED_CALLS = {"torch.load", "pandas.read_pickle"}
BANNED_METHODS = {"to_pickle", "read_pickle", "__reduce__", "__reduce_ex__", "__setstate__"}


def _sources() -> Iterator[tuple[str, str]]:
    for path in sorted(PKG.rglob("*.py")):
        if not any(path.is_relative_to(e) for e in EXCLUDED):
            yield path.relative_to(PKG).as_posix(), path.read_text(encoding="utf-8")


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def ast_findings(source: str) -> list[str]:
    """Pickle-family imports and calls found in ``source`` by its syntax tree."""
    tree = ast.parse(source)
    alias: dict[str, str] = {}
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                alias[a.asname or top] = a.name if a.asname else top
                if a.name.split(".")[0] in BANNED_MODULES:
                    out.append(f"{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in BANNED_MODULES:
                out.append(f"{node.lineno}: from {mod} import ...")
            for a in node.names:
                alias[a.asname or a.name] = f"{mod}.{a.name}"
                if a.name in BANNED_MODULES:
                    out.append(f"{node.lineno}: from {mod} import {a.name}")
        elif isinstance(node, ast.FunctionDef) and node.name in BANNED_METHODS:
            out.append(f"{node.lineno}: defines {node.name}")
        elif isinstance(node, ast.Call):
            out.extend(_call_findings(node, alias))
    return out


def _call_findings(node: ast.Call, alias: dict[str, str]) -> list[str]:
    dotted = _dotted(node.func) or ""
    head, _, rest = dotted.partition(".")
    q = alias.get(head, head) + ("." + rest if rest else "")
    out = []
    method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
    if q in BANNED_CALLS or method in BANNED_METHODS:
        out.append(f"{node.lineno}: {q}(...)")
    if q.endswith(".load") or q == "load" or q.endswith(".loadtxt"):
        for k in node.keywords:
            if k.arg == "allow_pickle" and not (
                isinstance(k.value, ast.Constant) and k.value.value is False
            ):
                out.append(f"{node.lineno}: {q}(allow_pickle=...)")
    if q in {"__import__", "importlib.import_module"} and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] in BANNED_MODULES:
            out.append(f"{node.lineno}: dynamic import of {arg.value}")
    return out


def token_findings(source: str) -> list[str]:
    """Banned names as *code* tokens (identifiers), or as exact string literals (dynamic
    imports such as ``getattr(__import__(name), ...)``); prose in docstrings is not code."""
    out = []
    prev: list[str] = ["", ""]
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string == "load" and prev == ["torch", "."]:
            out.append(f"{tok.start[0]}: torch.load")
        if tok.type in (tokenize.NAME, tokenize.OP):
            prev = [prev[1], tok.string]
        if tok.type == tokenize.NAME and tok.string in BANNED_MODULES | BANNED_METHODS:
            out.append(f"{tok.start[0]}: name {tok.string}")
        elif tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str) and value.strip() in BANNED_MODULES | BANNED_CALLS:
                out.append(f"{tok.start[0]}: string {value!r}")
        elif tok.type == tokenize.NAME and tok.string == "allow_pickle":
            out.append(f"{tok.start[0]}: allow_pickle")
    return out


def test_static_scan_finds_no_pickle_family_in_privcomp() -> None:
    found: list[str] = []
    n_files = 0
    for rel, src in _sources():
        n_files += 1
        found += [f"{rel}:{f}" for f in ast_findings(src) + token_findings(src)]
    assert n_files > 50
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\n",
        "import cPickle\n",
        "import _pickle as p\n",
        "import dill\n",
        "from cloudpickle import dumps\n",
        "import marshal\n",
        "import shelve\n",
        "import joblib\n",
        "from multiprocessing.reduction import ForkingPickler as pickle\n",
        "import torch\nm = torch.load('m.pt')\n",
        "import numpy as np\nx = np.load('a.npy', allow_pickle=True)\n",
        "import numpy\nx = numpy.load(f, allow_pickle=flag)\n",
        "import pandas as pd\ndf = pd.read_pickle('x')\n",
        "def f(df):\n    df.to_pickle('x')\n",
        "class A:\n    def __reduce__(self):\n        return (print, ())\n",
        "m = __import__('pickle')\n",
        "import importlib\nm = importlib.import_module('dill')\n",
    ],
)
def test_scanners_flag_mutated_sources(source: str) -> None:
    assert ast_findings(source) or token_findings(source), source
    # the token scan alone catches every name-based form too
    if "import" in source and "importlib" not in source and "__import__" not in source:
        assert token_findings(source), source


def test_scanners_ignore_prose_and_safe_loads() -> None:
    src = '"""Never pickle: no pickle, dill or marshal crosses a process boundary."""\n'
    src += "import numpy as np\nx = np.load('a.npy')\ny = np.load('b.npy', allow_pickle=False)\n"
    assert ast_findings(src) == []
    assert [f for f in token_findings(src) if "allow_pickle" not in f] == []


# -- dynamic -------------------------------------------------------------------------------


class _Marker:
    """Object with identity-only equality: the kind of thing only pickle could carry."""


def test_codec_refuses_object_dtypes() -> None:
    for arr in (
        np.array([_Marker(), _Marker()], dtype=object),
        np.array([1, 2], dtype=object),  # numbers, but boxed: still refused
        np.array(["a", "b"]),
        np.array([b"a"]),
        np.zeros(2, dtype=[("a", "<u8")]),  # structured
        np.zeros(2, dtype=np.complex128),
    ):
        with pytest.raises(CodecError):
            array_to_bytes(arr)


def _pickle_payload(target: Path) -> bytes:
    """A protocol-0 pickle that runs ``touch target`` when unpickled (hand-written: the test
    itself never imports pickle)."""
    return f"cos\nsystem\n(S'touch {target}'\ntR.".encode()


def _with_codec_magic(payload: bytes) -> list[bytes]:
    """The payload raw, behind a valid codec magic, and behind a header claiming an object
    dtype code, so every parser branch sees it."""
    return [
        payload,
        b"PCA\x01" + payload,
        b"PCA\x01\x00\x01" + (len(payload)).to_bytes(8, "little") + payload,
        b"PCA\x01\x11\x01" + (len(payload)).to_bytes(8, "little") + payload,
    ]


def test_decoders_refuse_pickle_payloads(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    for blob in _with_codec_magic(_pickle_payload(target)):
        with pytest.raises(CodecError):
            array_from_bytes(blob)
        with pytest.raises(CodecError):
            decode_ring(blob, 3)
    assert not target.exists()


async def test_protocol_round_refuses_pickle_from_a_peer(tmp_path: Path) -> None:
    """Party 1 sends a pickle instead of its masked opening: the round fails with a typed error
    naming no value, and nothing is ever unpickled."""
    target = tmp_path / "pwned"
    evil = _pickle_payload(target)

    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        if ctx.party_id == 1:
            tag = f"{ctx._counter + 1}:open"  # the tag the next (mul) round will use
            for p in ctx.peers:
                await ctx.transport.send(p, tag, evil)
            return None
        return await (await xs[0].mul(xs[1])).reveal()

    with pytest.raises(PrivcompError) as info:
        await simulate_async(program, [np.ones(4)] * 3, triples="dealer", timeout=5)
    assert isinstance(info.value, CodecError)
    assert not target.exists()
