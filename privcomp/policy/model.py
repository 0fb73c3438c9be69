"""Per-party release policy: allowed columns and operations per dataset and requester, and k.

A party's :class:`Policy` is enforced by that party's own worker before anything it
contributes leaves it. Lookup order for a ``(dataset, requester)`` pair: the requester's own
rule for the dataset, else the dataset's rule, else :attr:`Policy.default`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from privcomp.errors import ConfigurationError, PolicyViolation

#: Every operation a policy can allow.
ALL_OPERATIONS = frozenset(
    {
        "count",
        "sum",
        "mean",
        "var",
        "std",
        "cov",
        "corr",
        "min",
        "max",
        "quantile",
        "histogram",
        "value_counts",
        "groupby",
        "join",
    }
)
#: Minimum group size: the CMS cell-suppression rule forbids cells of 1 to 10 records.
DEFAULT_K = 11


def _names(value: Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigurationError(f"{what} must be a list of names, not a string")
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class Rule:
    """Allowed columns and operations on one dataset (``None`` means all)."""

    columns: frozenset[str] | None = None
    operations: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.operations is not None and not self.operations <= ALL_OPERATIONS:
            unknown = sorted(self.operations - ALL_OPERATIONS)
            raise ConfigurationError(f"unknown operations in policy: {unknown}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        """Build from ``{"columns": [...], "operations": [...]}`` (both optional)."""
        extra = set(d) - {"columns", "operations"}
        if extra:
            raise ConfigurationError(f"unknown rule keys: {sorted(extra)}")
        return cls(_names(d.get("columns"), "columns"), _names(d.get("operations"), "operations"))

    def check(self, dataset: str, columns: Iterable[str], operations: Iterable[str]) -> None:
        """Raise :class:`PolicyViolation` naming the first column or operation not allowed."""
        if self.columns is not None:
            for c in sorted(set(columns) - self.columns):
                raise PolicyViolation(f"column {c!r} of dataset {dataset!r} is not allowed")
        if self.operations is not None:
            for op in sorted(set(operations) - self.operations):
                raise PolicyViolation(f"operation {op!r} on dataset {dataset!r} is not allowed")


@dataclass(frozen=True, slots=True)
class Policy:
    """One party's release policy.

    Parameters
    ----------
    k:
        Minimum number of this party's records (and of the joint records) behind any released
        figure; smaller groups are refused with :class:`~privcomp.errors.GroupTooSmall`.
    default:
        Rule for datasets and requesters not listed.
    datasets:
        Rule per dataset name.
    requesters:
        Rule per requester, then per dataset (overrides ``datasets``).
    differencing:
        Refuse a query whose record set differs from an earlier one by fewer than ``k`` records.

    Examples
    --------
    >>> Policy.from_dict({"k": 20, "datasets": {"patients": {"columns": ["age", "sex"]}}}).k
    20
    """

    k: int = DEFAULT_K
    default: Rule = field(default_factory=Rule)
    datasets: Mapping[str, Rule] = field(default_factory=dict)
    requesters: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)
    differencing: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigurationError(f"k must be at least 1, got {self.k}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Policy | None) -> Policy:
        """Build from a plain mapping (the YAML/JSON form of a worker's policy file)."""
        if d is None:
            return cls()
        if isinstance(d, Policy):
            return d
        extra = set(d) - {"k", "default", "datasets", "requesters", "differencing"}
        if extra:
            raise ConfigurationError(f"unknown policy keys: {sorted(extra)}")
        return cls(
            k=int(d.get("k", DEFAULT_K)),
            default=Rule.from_dict(d.get("default", {})),
            datasets={n: Rule.from_dict(r) for n, r in d.get("datasets", {}).items()},
            requesters={
                who: {n: Rule.from_dict(r) for n, r in rules.items()}
                for who, rules in d.get("requesters", {}).items()
            },
            differencing=bool(d.get("differencing", True)),
        )

    def rule(self, dataset: str, requester: str) -> Rule:
        """The rule that applies to ``requester`` on ``dataset``."""
        mine = self.requesters.get(requester, {})
        if dataset in mine:
            return mine[dataset]
        return self.datasets.get(dataset, self.default)
