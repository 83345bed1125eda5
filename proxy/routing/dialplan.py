"""Dialplan: ordered regex match / substitute rules per dialplan id (OpenSIPS dialplan).

A rule has a match expression (Python ``re``, searched, so anchor it with
``^``/``$`` as in OpenSIPS), an optional substitution expression and a
replacement template (``\\1`` or ``\\g<name>`` refer to groups of the
substitution expression; without one, to groups of the match expression).
``translate(dpid, value)`` applies the first rule of that dialplan whose match
expression matches, rules taken by ascending priority (then insertion order),
as OpenSIPS does; the value is replaced once, at the first match.

- ``--match '^0(\\d+)$' --repl '+49\\1'``      0301234 -> +49301234
- ``--match '^00' --subst '^00' --repl '+'``   0044... -> +44...
- ``--match '^\\+'``                            matches, value unchanged (attributes only)

Every expression and template is compiled when the rule is made, so a bad
one is refused with the rule named, at ``dialplan add`` and again at load.
Pure: no database.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .common import RoutingError, check_attrs

__all__ = ["DialplanRule", "Dialplans", "MAX_EXPR"]

MAX_EXPR = 512
MAX_DPID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class DialplanRule:
    dpid: int
    match: str
    subst: str | None = None
    repl: str | None = None
    priority: int = 0
    attrs: str = ""
    id: int = 0                              # the stored row, 0 before it is stored
    _match: re.Pattern = field(init=False, repr=False, compare=False)
    _subst: re.Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.dpid, int) or not 0 <= self.dpid <= MAX_DPID:
            raise RoutingError(f"{self.label}: dialplan id must be a number from 0 to {MAX_DPID}")
        check_attrs(self.attrs)
        object.__setattr__(self, "_match", self._compile("match", self.match))
        subst = self._compile("substitution", self.subst) if self.subst else None
        object.__setattr__(self, "_subst", subst)
        if self.repl is not None:
            if len(self.repl) > MAX_EXPR or any(c in self.repl for c in "\r\n\0"):
                raise RoutingError(f"{self.label}: replacement must be one line of at most {MAX_EXPR} characters")
            try:
                # compiling the template checks escapes and group references
                (subst or self._match).sub(self.repl, "")
            except (re.error, IndexError) as exc:
                raise RoutingError(f"{self.label}: bad replacement {self.repl!r}: {exc}") from None

    @property
    def label(self) -> str:
        rule = f"rule #{self.id}" if self.id else "rule"
        return f"dialplan {self.dpid} {rule} (priority {self.priority})"

    def _compile(self, what: str, expr: str) -> re.Pattern:
        if not isinstance(expr, str) or not expr or len(expr) > MAX_EXPR:
            raise RoutingError(f"{self.label}: {what} expression must be 1 to {MAX_EXPR} characters")
        try:
            return re.compile(expr)
        except re.error as exc:
            raise RoutingError(f"{self.label}: bad {what} regex {expr!r}: {exc}") from None

    def matches(self, value: str) -> bool:
        return self._match.search(value) is not None

    def apply(self, value: str) -> str:
        """The value rewritten by this rule (assumed to match)."""
        if self.repl is None:
            return value
        return (self._subst or self._match).sub(self.repl, value, count=1)


class Dialplans:
    """All dialplans, each an ordered tuple of rules."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[DialplanRule] = ()):
        by_id: dict[int, list[DialplanRule]] = {}
        for rule in rules:
            by_id.setdefault(rule.dpid, []).append(rule)
        self._rules = {dpid: tuple(sorted(r, key=lambda x: (x.priority, x.id)))
                       for dpid, r in by_id.items()}

    def __len__(self) -> int:
        return sum(len(r) for r in self._rules.values())

    @property
    def ids(self) -> list[int]:
        return sorted(self._rules)

    def rules(self, dpid: int) -> tuple[DialplanRule, ...]:
        return self._rules.get(dpid, ())

    def translate(self, dpid: int, value: str) -> tuple[str, DialplanRule] | None:
        """dp_translate: (new value, the rule applied), or None when no rule matches."""
        for rule in self._rules.get(dpid, ()):
            if rule.matches(value):
                return rule.apply(value), rule
        return None
