"""Shared pytest fixtures (keep tiny)."""

from __future__ import annotations

import pytest

from privcomp.core.rng import InsecureSeededRandom


@pytest.fixture
def seeded_rng() -> InsecureSeededRandom:
    """A reproducible (NON-cryptographic) random source for tests."""
    return InsecureSeededRandom(1234)
