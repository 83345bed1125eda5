"""What every routing-data module shares: the error type, name checks, prefix lookup.

Pure: no database, no clock.  ``RoutingError`` is a ``ProvisioningError``
(routing data lives in the provisioning database and the operator's CLI
treats both the same: one line, exit 1).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from proxy.provisioning.models import ProvisioningError

__all__ = ["RoutingError", "check_name", "check_prefix", "check_attrs", "PrefixTable"]

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# dialled numbers: digits with the usual extras; letters for operator codes
_PREFIX = re.compile(r"^[0-9A-Za-z+*#]{0,32}$")
MAX_ATTRS = 255


class RoutingError(ProvisioningError):
    """Routing data that cannot be stored or loaded, worded as one line for the operator."""


def check_name(name: str, what: str) -> str:
    """Gateway, carrier, list, group and destination names: a short token."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise RoutingError(f"invalid {what} name {str(name)[:64]!r} "
                           "(letters, digits, '_', '.', '-'; at most 64)")
    return name


def check_prefix(prefix: str, what: str = "prefix") -> str:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise RoutingError(f"invalid {what} {str(prefix)[:40]!r} (digits, letters, '+', '*', '#'; at most 32)")
    return prefix


def check_attrs(attrs: str | None) -> str:
    attrs = attrs or ""
    if len(attrs) > MAX_ATTRS or any(c in attrs for c in "\r\n\0"):
        raise RoutingError(f"attributes must be one line of at most {MAX_ATTRS} characters")
    return attrs


class PrefixTable(Generic[T]):
    """Values keyed by number prefix; lookups walk from the longest match down."""

    __slots__ = ("_by_prefix", "_lengths")

    def __init__(self, items: Iterable[tuple[str, T]] = ()):
        by_prefix: dict[str, list[T]] = {}
        for prefix, value in items:
            by_prefix.setdefault(prefix, []).append(value)
        self._by_prefix = {p: tuple(v) for p, v in by_prefix.items()}
        self._lengths = sorted({len(p) for p in by_prefix}, reverse=True)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_prefix.values())

    def matches(self, number: str) -> Iterator[tuple[str, tuple[T, ...]]]:
        """(prefix, values) for every prefix of ``number``, longest first."""
        for length in self._lengths:
            if length <= len(number):
                values = self._by_prefix.get(number[:length])
                if values is not None:
                    yield number[:length], values

    def longest(self, number: str) -> tuple[str, tuple[T, ...]] | None:
        return next(self.matches(number), None)
