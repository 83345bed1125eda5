"""Report exports -- CSV, Parquet, XLSX -- typed by the report's schema, money exact in each.

The CLI (``sipledger report``) and the REST API (streamed downloads) write
through these functions only, so one report is the same file from both.

* **Parquet**: the report's pyarrow schema (billing/reports/build.py): money
  ``decimal128(18, 6)``, minutes ``decimal128(18, 3)``, counts and seconds
  ``int64``; the report's meta in the schema metadata (``sipledger.*``).
* **XLSX**: numbers are numeric cells (Excel can sum them) with a number
  format: money by the one rule of billing/money.py -- ``#,##0.00`` when exact
  to the cent, six decimals when it has more -- minutes ``0.000``, counts
  ``0``.  An Excel number is a double: a money value with more than 15
  significant digits (beyond what Excel holds) is written as a text cell
  instead, so that it stays exact.
* **CSV**: text; money by the same rule (``report_text``), minutes as exact
  decimals.

``read_export`` reads any of them back, decimals as ``Decimal``.
"""
from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from billing.money import REPORT_FORMATS, money_text, report_places, report_text

from . import FORMATS
from .build import MONEY, SCHEMAS, Report
from .sources import CHUNK, Progress, no_progress

__all__ = ["FORMATS", "CONTENT_TYPES", "EXCEL_DIGITS", "write_report", "report_bytes", "read_export"]

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EXCEL_DIGITS = 15                   # significant digits an Excel number (a double) holds exactly
_INTEGER_FORMAT = "0"
_MINUTES_FORMAT = "0.000"
# a column name means one type in every report: what read_export converts by
_COLUMN_TYPES: dict[str, pa.DataType] = {f.name: f.type for schema in SCHEMAS.values() for f in schema}


def _text(value: Any, type_: pa.DataType) -> str:
    if type_ == MONEY:
        return report_text(value)
    if pa.types.is_decimal(type_):
        return money_text(value)
    return str(value)


def _text_rows(report: Report) -> Iterator[list[str]]:
    types = report.schema.types
    for values in report.frame.itertuples(index=False, name=None):
        yield [_text(v, t) for v, t in zip(values, types)]


def _csv_chunks(report: Report, progress: Progress) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.schema.names)
    total = len(report.frame)
    for i, row in enumerate(_text_rows(report), 1):
        writer.writerow(row)
        if i % CHUNK == 0:
            progress(i, total)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    progress(total, total)
    yield buffer.getvalue().encode()


def _write_parquet(report: Report, sink, progress: Progress) -> None:
    import pyarrow.parquet as pq
    metadata = {f"sipledger.{k}": str(v) for k, v in report.meta.items()}
    metadata["sipledger.report"] = report.name
    table = pa.Table.from_pandas(report.frame, schema=report.schema, preserve_index=False) \
        .replace_schema_metadata(metadata)
    total = table.num_rows
    with pq.ParquetWriter(sink, table.schema) as writer:
        for start in range(0, max(total, 1), CHUNK):
            writer.write_table(table.slice(start, CHUNK))
            progress(min(total, start + CHUNK), total)


def _fits_excel(value: Decimal) -> bool:
    return len(value.normalize().as_tuple().digits) <= EXCEL_DIGITS


def _xlsx_value(new_cell: Callable[..., Any], value: Any, type_: pa.DataType) -> Any:
    """What goes into an XLSX cell: a number as a numeric cell with its number
    format (``new_cell(value=...)``: a write-only cell), text as it is."""
    if pa.types.is_decimal(type_):
        if not _fits_excel(value):
            return _text(value, type_)                  # exact as text rather than rounded by Excel
        cell = new_cell(value=value)
        cell.number_format = REPORT_FORMATS[report_places(value)] if type_ == MONEY else _MINUTES_FORMAT
        return cell
    if pa.types.is_integer(type_):
        cell = new_cell(value=int(value))
        cell.number_format = _INTEGER_FORMAT
        return cell
    return value


def _write_xlsx(report: Report, sink, progress: Progress) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(report.name)
    new_cell = functools.partial(WriteOnlyCell, sheet)
    sheet.append(report.schema.names)
    types = report.schema.types
    total = len(report.frame)
    for i, values in enumerate(report.frame.itertuples(index=False, name=None), 1):
        sheet.append([_xlsx_value(new_cell, v, t) for v, t in zip(values, types)])
        if i % CHUNK == 0:
            progress(i, total)
    info = workbook.create_sheet("info")
    info.append(["key", "value"])
    info.append(["report", report.name])
    for key, value in report.meta.items():
        info.append([key, str(value)])
    workbook.save(sink)
    progress(total, total)


def write_report(report: Report, path: str | Path, fmt: str, *, progress: Progress = no_progress) -> int:
    """Write ``report`` to ``path``; returns the rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "csv":
        with open(path, "wb") as out:
            for chunk in _csv_chunks(report, progress):
                out.write(chunk)
    elif fmt == "parquet":
        _write_parquet(report, str(path), progress)
    else:
        _write_xlsx(report, str(path), progress)
    return len(report.frame)


def report_bytes(report: Report, fmt: str) -> Iterator[bytes]:
    """The export as a stream of byte chunks (the API's streamed download)."""
    if fmt == "csv":
        yield from _csv_chunks(report, no_progress)
        return
    buffer = io.BytesIO()
    if fmt == "parquet":
        _write_parquet(report, buffer, no_progress)
    elif fmt == "xlsx":
        _write_xlsx(report, buffer, no_progress)
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    view = buffer.getbuffer()
    for start in range(0, len(view), 1 << 16):
        yield bytes(view[start:start + (1 << 16)])


def _typed(column: str, values: list) -> pd.Series:
    """A CSV / XLSX column back in its report type (decimals exact: an XLSX number
    is read as the shortest text of its double, which is the decimal written)."""
    type_ = _COLUMN_TYPES.get(column)
    if type_ is not None and pa.types.is_decimal(type_):
        values = [None if v is None else Decimal(repr(v) if isinstance(v, float) else str(v)) for v in values]
    elif type_ is not None and pa.types.is_integer(type_):
        values = [None if v in (None, "") else int(v) for v in values]
    else:
        values = ["" if v is None else v for v in values]      # XLSX keeps no empty text cell
    return pd.Series(values, dtype=object)


def read_export(path_or_bytes: str | Path | bytes, fmt: str) -> pd.DataFrame:
    """An export read back, decimal columns as Decimal (round-trip checks, tooling)."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        handle: Any = io.BytesIO(path_or_bytes)
    else:
        handle = str(path_or_bytes)
    if fmt == "csv":
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
        return pd.DataFrame({column: _typed(column, list(frame[column])) for column in frame.columns})
    if fmt == "parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(handle)
        return pd.DataFrame({name: pd.Series(table.column(name).to_pylist(), dtype=object)
                             for name in table.column_names})
    if fmt == "xlsx":
        from openpyxl import load_workbook
        workbook = load_workbook(handle, read_only=True)
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
        columns = list(rows[0])
        return pd.DataFrame({c: _typed(c, [r[i] for r in rows[1:]]) for i, c in enumerate(columns)},
                            columns=columns)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
