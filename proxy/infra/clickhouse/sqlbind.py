"""Client-side query parameters for ClickHouse, the same on chdb and on 18.16.

ClickHouse 18.16 has no ``{x:Type}`` server-side parameters, so every value a
user supplies is bound here into a literal, never concatenated by callers::

    bind("SELECT * FROM cdr WHERE account = {account} AND leg IN {legs}",
         {"account": "o'neil@example.test", "legs": [0, 1]})

Placeholders are ``{name}`` outside string literals, quoted identifiers and
comments; every placeholder must have a value and every value must be used
(a typo is an error, not an empty filter).  Supported values: ``None``
(NULL), ``bool``, ``int``, finite ``float``, ``str``, ``decimal.Decimal`` (as a
string literal: money never goes through float), and lists/tuples of those
(rendered ``(a, b, ...)`` for ``IN``; an empty list is refused because
``IN ()`` is a syntax error).  Strings are escaped per ClickHouse's quoting
rules: backslash and single quote escaped, control characters as ``\\xHH``.
"""
from __future__ import annotations

import decimal
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["BindError", "bind", "literal", "quote_string"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BindError(ValueError):
    """A placeholder without a value, a value without a placeholder, or a value
    of a type that cannot be bound."""


def quote_string(value: str) -> str:
    out = ["'"]
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def literal(value: Any) -> str:
    """The SQL literal for one value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BindError(f"cannot bind non-finite float {value!r}")
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise BindError(f"cannot bind non-finite decimal {value!r}")
        return quote_string(str(value))
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise BindError("cannot bind an empty list (IN () is not valid SQL)")
        return "(" + ", ".join(literal(v) for v in value) + ")"
    raise BindError(f"cannot bind a value of type {type(value).__name__}")


def bind(sql: str, params: Mapping[str, Any] | None = None) -> str:
    """``sql`` with every ``{name}`` placeholder replaced by ``params[name]``'s literal."""
    params = params or {}
    out: list[str] = []
    used: set[str] = set()
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = _end_of_quoted(sql, i)
            out.append(sql[i:j])
            i = j
        elif ch == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
        elif ch == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise BindError("unterminated comment in SQL")
            out.append(sql[i:j + 2])
            i = j + 2
        elif ch == "{":
            j = sql.find("}", i)
            name = sql[i + 1:j] if j > 0 else ""
            if not _NAME.fullmatch(name):
                raise BindError(f"bad placeholder at offset {i}: {sql[i:i + 20]!r}")
            if name not in params:
                raise BindError(f"no value for placeholder {{{name}}}")
            out.append(literal(params[name]))
            used.add(name)
            i = j + 1
        else:
            j = i + 1
            while j < n and sql[j] not in "'\"`-/{":
                j += 1
            out.append(sql[i:j])
            i = j
    unused = set(params) - used
    if unused:
        raise BindError(f"parameters without a placeholder: {', '.join(sorted(unused))}")
    return "".join(out)


def _end_of_quoted(sql: str, start: int) -> int:
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:   # doubled quote
                i += 2
                continue
            return i + 1
        i += 1
    raise BindError("unterminated quoted text in SQL")
