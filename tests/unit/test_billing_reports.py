"""Billing reports (billing/reports/): the numbers, and CSV / Parquet / XLSX
exports that read back to exactly the same Decimals (money never a float),
typed columns, and one money formatting rule whatever the source."""
from __future__ import annotations

from decimal import Decimal as D

import pandas as pd
import pytest

from billing.ledger.accounts import AccountInfo
from billing.ledger.events import money_event
from billing.ledger.store import LedgerStore
from billing.reports.build import build_report
from billing.reports.export import FORMATS, read_export, report_bytes, write_report
from billing.reports.sources import SqliteSource
from proxy.contract.ledger import LedgerEvent

ALICE = AccountInfo(id="alice@a.test", kind="postpaid", credit_limit=D("100"))
NOV = 1793491200000                 # 2026-11-01T00:00:00Z
DEC = 1796083200000                 # 2026-12-01T00:00:00Z


def debit(n, amount, ts, *, prefix="49", name="Germany", gateway="gw-a", billed=60, duration=59_500):
    return LedgerEvent(id=f"d{n}", account=ALICE.id, kind="debit", amount=D(amount), currency="EUR", ts_ms=ts,
                       cdr_id=f"cdr-{n}", leg=0, call_id=f"call-{n}", answer_ms=ts - duration, number="4930",
                       plan="p", prefix=prefix, rate_name=name, gateway=gateway, duration_ms=duration, billed_s=billed)


@pytest.fixture
def store(tmp_path):
    s = LedgerStore(f"sqlite:///{tmp_path}/billing.sqlite")
    s.create_schema()
    s.put_account(ALICE, create=True)
    s.append([
        money_event(ALICE, "topup", D("999999999.999999"), "old", ts_ms=NOV - 5000),        # before the period
        debit(0, "0.000001", NOV - 1000),
        money_event(ALICE, "topup", D("10.10"), "nov", ts_ms=NOV + 1000),
        debit(1, "0.30000", NOV + 100_000),
        debit(2, "1.234567", NOV + 200_000, prefix="33", name="France", gateway="gw-b", billed=120, duration=119_001),
        debit(3, "0.1", NOV + 300_000, gateway=""),
        money_event(ALICE, "adjustment", D("-0.000003"), "fix", ts_ms=NOV + 400_000, note="rounding"),
        money_event(ALICE, "refund", D("0.1"), "refund-3", ts_ms=NOV + 500_000),
        LedgerEvent(id="r1", account=ALICE.id, kind="reservation", amount=D("5"), currency="EUR",
                    ts_ms=NOV + 600_000, call_id="call-9"),
        debit(4, "7", DEC + 100_000),                                                           # after
    ])
    yield s
    s.close()


def test_statement_balances_add_up_exactly(store):
    report = build_report("statement", SqliteSource(store), account=ALICE.id, from_ms=NOV, to_ms=DEC)
    frame = report.frame
    assert list(frame["kind"]) == ["opening", "topup", "debit", "debit", "debit", "adjustment", "refund", "closing"]
    opening = D("999999999.999999") - D("0.000001")
    assert frame["balance"].iloc[0] == opening
    closing = opening + D("10.10") - D("0.30000") - D("1.234567") - D("0.1") - D("0.000003") + D("0.1")
    assert frame["balance"].iloc[-1] == closing == D("1000000008.565428")
    assert all(isinstance(v, D) for v in frame["amount"]) and frame["amount"].dtype == object
    assert report.meta["closing_balance"] == "1000000008.565428"


def test_destinations_gateways_invoice(store):
    source = SqliteSource(store)
    dest = build_report("destinations", source, account=ALICE.id, from_ms=NOV, to_ms=DEC).frame
    rows = {r.prefix: r for r in dest.itertuples()}
    assert rows["49"].calls == 2 and rows["49"].cost == D("0.40000") and rows["49"].billed_s == 120
    assert rows["33"].cost == D("1.234567") and rows["33"].minutes == D("1.983")
    gws = build_report("gateways", source, account=None, from_ms=NOV, to_ms=DEC).frame
    assert dict(zip(gws["gateway"], gws["cost"])) == {"gw-b": D("1.234567"), "gw-a": D("0.30000"),
                                                        "(direct)": D("0.1")}
    inv = build_report("invoice", source, account=ALICE.id, from_ms=NOV, to_ms=DEC, info=ALICE)
    total = inv.frame[inv.frame["section"] == "total"].iloc[0]
    assert total["debit"] == D("1.634570") and total["credit"] == D("10.20")
    assert inv.meta["charges"] == "1.634570" and inv.meta["amount_due"] == "0.00"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["statement", "destinations", "gateways", "invoice"])
def test_exports_round_trip_exact_decimals(store, tmp_path, fmt, name):
    report = build_report(name, SqliteSource(store), account=ALICE.id, from_ms=NOV, to_ms=DEC, info=ALICE)
    path = tmp_path / f"{name}.{fmt}"
    seen = []
    rows = write_report(report, path, fmt, progress=lambda done, total: seen.append((done, total)))
    assert rows == len(report.frame) and seen[-1] == (rows, rows)
    back = read_export(path, fmt)
    streamed = read_export(b"".join(report_bytes(report, fmt)), fmt)
    for column in report.money_columns:
        assert list(back[column]) == list(report.frame[column]), column
        assert list(streamed[column]) == list(report.frame[column]), column
        assert all(isinstance(v, D) for v in back[column])
        # equal *and* not a float in disguise: the digits are all there
        assert not pd.api.types.is_float_dtype(back[column])
    if fmt == "parquet":
        import pyarrow.parquet as pq
        schema = pq.read_schema(path)
        for column in report.money_columns:
            assert str(schema.field(column).type) == "decimal128(18, 6)"
        assert schema.metadata[b"sipledger.report"] == name.encode()
    for column, value in zip(report.frame.columns, report.frame.iloc[-1]):     # every column, typed
        assert back[column].iloc[-1] == value, (column, fmt)


def test_parquet_columns_are_typed(store, tmp_path):
    import pyarrow.parquet as pq
    report = build_report("destinations", SqliteSource(store), account=ALICE.id, from_ms=NOV, to_ms=DEC)
    write_report(report, tmp_path / "d.parquet", "parquet")
    schema = pq.read_schema(tmp_path / "d.parquet")
    types = {name: str(schema.field(name).type) for name in schema.names}
    assert types == {"prefix": "string", "rate_name": "string", "currency": "string", "calls": "int64",
                     "minutes": "decimal128(18, 3)", "billed_s": "int64", "cost": "decimal128(18, 6)"}
    assert read_export(tmp_path / "d.parquet", "parquet")["minutes"].tolist() == [D("1.983"), D("1.983")]


def test_xlsx_money_is_numeric_with_a_number_format(store, tmp_path):
    """Excel can sum the money cells: numbers, formatted to the cent -- or to the
    ledger's 6 decimals where an amount has more -- and exactly the ledger's values."""
    from openpyxl import load_workbook
    report = build_report("statement", SqliteSource(store), account=ALICE.id, from_ms=NOV, to_ms=DEC)
    write_report(report, tmp_path / "s.xlsx", "xlsx")
    sheet = load_workbook(tmp_path / "s.xlsx").worksheets[0]
    header = [c.value for c in sheet[1]]
    amount = header.index("amount") + 1
    cells = [sheet.cell(row, amount) for row in range(2, sheet.max_row + 1)]
    assert all(c.data_type == "n" for c in cells)
    formats = {D(repr(c.value)): c.number_format for c in cells}
    assert formats[D("10.10")] == "#,##0.00" and formats[D("-0.1")] == "#,##0.00"
    assert formats[D("-1.234567")] == "#,##0.000000" and formats[D("-0.000003")] == "#,##0.000000"
    assert [D(repr(c.value)) for c in cells] == list(report.frame["amount"])          # exact
    # a balance of 16 significant digits is more than an Excel number holds: kept exact, as text
    balance = sheet.cell(sheet.max_row, header.index("balance") + 1)
    assert balance.data_type == "s" and D(balance.value) == report.frame["balance"].iloc[-1] \
        == D("1000000008.565428")
    calls = load_workbook(tmp_path / "s.xlsx").worksheets[0].cell(3, header.index("seq") + 1)
    assert calls.data_type == "n" and calls.number_format == "0"


class _ScaledSource(SqliteSource):
    """The ledger as ClickHouse gives it back: every amount at Decimal(18,6)'s scale."""

    def events(self, **kwargs):
        rows = super().events(**kwargs)
        for row in rows:
            for money in ("amount", "balance_delta"):
                row[money] = row[money].quantize(D("0.000001"))
        return rows

    def opening_balance(self, account, before_ms):
        return super().opening_balance(account, before_ms).quantize(D("0.000001"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_formatting_rule_whatever_the_source(store, fmt):
    """The CLI reads SQLite ("10.10"), the API ClickHouse ("10.100000"): the same file."""
    kwargs = dict(account=ALICE.id, from_ms=NOV, to_ms=DEC, info=ALICE)
    for name in ("statement", "invoice", "destinations"):
        cli = build_report(name, SqliteSource(store), **kwargs)
        api = build_report(name, _ScaledSource(store), **kwargs)
        assert cli.meta == api.meta
        if fmt == "csv":
            assert b"".join(report_bytes(cli, fmt)) == b"".join(report_bytes(api, fmt))
        else:
            assert read_export(b"".join(report_bytes(cli, fmt)), fmt).equals(
                read_export(b"".join(report_bytes(api, fmt)), fmt))
    text = b"".join(report_bytes(build_report("statement", SqliteSource(store), **kwargs), "csv")).decode()
    assert ",topup,top-up,nov,EUR,10.10," in text and ",-0.000003," in text and ",-1.234567," in text


@pytest.mark.parametrize("value,text", [(D("10"), "10.00"), (D("10.000000"), "10.00"), (D("-0.1"), "-0.10"),
                                        (D("0.34167"), "0.341670"), (D("1.234567"), "1.234567"),
                                        (D("-0.000003"), "-0.000003"), (D("0"), "0.00")])
def test_the_report_money_rule(value, text):
    from billing.money import REPORT_FORMATS, report_places, report_text
    assert report_text(value) == text
    assert REPORT_FORMATS[report_places(value)].rsplit(".", 1)[1] == "0" * len(text.rsplit(".", 1)[1])


def test_a_column_name_has_one_type_in_every_report():
    from billing.reports.build import SCHEMAS
    seen: dict = {}
    for schema in SCHEMAS.values():
        for f in schema:
            assert seen.setdefault(f.name, f.type) == f.type, f.name


def test_the_report_rule_never_rounds():
    from decimal import Inexact

    from billing.money import report_text
    with pytest.raises(Inexact):
        report_text(D("0.0000001"))
