"""Money as exact ``Decimal``: what the ledger accepts, and the one way reports write it.

Never a float.  The ledger keeps at most ``MONEY_DECIMALS`` (6) decimals -- the
scale of the ClickHouse copy, Decimal(18,6) -- and *refuses* an amount with
more (it never rounds money): ``check_amount`` / ``parse_amount``.

Two texts of an amount, for two purposes:

* ``money_text``: the value exactly as it is (``Decimal("10")`` -> ``"10"``,
  ``Decimal("0.30000")`` -> ``"0.30000"``): JSON answers, SQL columns.
* ``report_text`` with ``report_places``: the *one* rule of every export (CSV,
  XLSX, Parquet metadata; CLI and REST alike): two decimals when the amount is
  exact to the cent, the ledger's six when it has more.  So an export does not
  depend on where its numbers were read from (SQLite keeps ``10``, ClickHouse
  gives ``10.000000``: both are ``10.00``).  XLSX uses the same rule as number
  formats (``REPORT_FORMATS``).
"""
from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation

from .errors import LedgerError

__all__ = ["ZERO", "MONEY_DECIMALS", "MAX_AMOUNT", "CENT", "check_amount", "parse_amount", "money_text",
           "report_places", "report_text", "REPORT_FORMATS"]

ZERO = Decimal(0)
MONEY_DECIMALS = 6
MAX_AMOUNT = Decimal(10) ** 12          # Decimal(18,6) holds |x| < 10^12
CENT = Decimal("0.01")
_LEDGER_QUANTUM = Decimal(1).scaleb(-MONEY_DECIMALS)
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])      # quantize, but never round
# XLSX number formats of the report rule, by the number of decimals
REPORT_FORMATS = {2: "#,##0.00", MONEY_DECIMALS: "#,##0." + "0" * MONEY_DECIMALS}


def check_amount(value: Decimal, what: str = "amount") -> Decimal:
    """``value`` if the ledger can hold it exactly (finite, at most 6 decimals, |x| < 10^12)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise LedgerError(f"{what} must be a finite decimal, not {value!r}")
    if abs(value) >= MAX_AMOUNT:
        raise LedgerError(f"{what} {value} is too large (limit {MAX_AMOUNT})")
    exponent = value.as_tuple().exponent        # an int: the value is finite (checked above)
    if isinstance(exponent, int) and exponent < -MONEY_DECIMALS and value != value.quantize(_LEDGER_QUANTUM):
        raise LedgerError(f"{what} {money_text(value)} has more than {MONEY_DECIMALS} decimals; "
                          "the ledger never rounds money")
    return value


def parse_amount(text: object, what: str = "amount") -> Decimal:
    """A plain decimal text (``"10"``, ``"-2.5"``, ``"0.000001"``) as an exact Decimal.
    Exponents, floats, NaN and more than 6 decimals are refused."""
    if isinstance(text, Decimal):
        return check_amount(text, what)
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise LedgerError(f"{what} must be a decimal string like \"10.50\", not {type(text).__name__}")
    raw = str(text).strip()
    body = raw[1:] if raw[:1] in "+-" else raw
    if not body or not all(c.isdigit() or c == "." for c in body) or body.count(".") > 1 \
            or body.startswith(".") or body.endswith("."):
        raise LedgerError(f"{what} {raw!r} is not a plain decimal number like 10.50")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise LedgerError(f"{what} {raw!r} is not a decimal number") from None
    return check_amount(value, what)


def money_text(value: Decimal) -> str:
    """Plain text of an amount (no exponent): 1E+1 -> "10", 0.30000 -> "0.30000"."""
    return format(value, "f")


def report_places(value: Decimal) -> int:
    """Decimals an export shows ``value`` with: 2 if it is exact to the cent, else 6."""
    return 2 if value == value.quantize(CENT) else MONEY_DECIMALS


def report_text(value: Decimal) -> str:
    """The export text of an amount: ``10`` -> ``"10.00"``, ``0.3416700`` -> ``"0.341670"``.
    Exact: a ledger amount has at most 6 decimals; one with more raises
    ``decimal.Inexact`` instead of being rounded."""
    places = report_places(value)
    return money_text(value.quantize(CENT if places == 2 else _LEDGER_QUANTUM, context=_EXACT))
