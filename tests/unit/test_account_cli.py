"""`sipledger account|ledger|report ...` with no billing service running: the
CLI writes the ledger itself under the service lock (billing/client.py) --
and refuses a bad command line with one line and exit status 2."""
from __future__ import annotations

import json
from decimal import Decimal as D

from typer.testing import CliRunner

from api.cli import app
from billing.reports.export import read_export


def run(tmp_path, *args, code=0):
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), *args])
    assert result.exit_code == code, (args, result.output)
    return result.output


def test_accounts_topups_reports(tmp_path):
    run(tmp_path, "account", "add", "alice@a.test", "--prepaid", "--currency", "EUR")
    run(tmp_path, "account", "add", "bob@b.test", "--postpaid", "--credit-limit", "100")
    run(tmp_path, "account", "add", "alice@a.test", code=1)                        # exists
    out = run(tmp_path, "account", "topup", "alice@a.test", "12.50", "--key", "pay-1")
    assert "balance 12.50" in out
    out = run(tmp_path, "account", "topup", "alice@a.test", "12.50", "--key", "pay-1")
    assert "already applied" in out and "balance 12.50" in out
    run(tmp_path, "account", "topup", "alice@a.test", "99", "--key", "pay-1", code=1)    # key reused
    run(tmp_path, "account", "topup", "alice@a.test", "1", code=2)                       # no key
    run(tmp_path, "account", "adjust", "alice@a.test", "-20", "--key", "too-much", code=1)
    assert "balance 10.25" in run(tmp_path, "account", "adjust", "alice@a.test", "-2.25", "--key", "fix")
    snap = json.loads(run(tmp_path, "account", "show", "alice@a.test", "--json"))
    assert snap["balance"] == "10.25" and not snap["live"] and len(snap["events"]) == 2
    assert "blocked" in run(tmp_path, "account", "block", "bob@b.test")
    listed = {a["id"]: a for a in json.loads(run(tmp_path, "account", "list", "--json"))}
    assert listed["alice@a.test"]["balance"] == "10.25" and listed["bob@b.test"]["status"] == "blocked"
    history = json.loads(run(tmp_path, "ledger", "history", "alice@a.test", "--json"))
    assert [e["kind"] for e in history] == ["adjustment", "topup"]
    out = tmp_path / "statement.xlsx"
    run(tmp_path, "report", "statement", "--account", "alice@a.test", "--format", "xlsx", "-o", str(out))
    frame = read_export(out, "xlsx")
    assert frame["balance"].iloc[-1] == D("10.25") and list(frame["amount"][1:3]) == [D("12.50"), D("-2.25")]
    run(tmp_path, "report", "invoice", "--format", "csv", "-o", str(tmp_path / "x.csv"), code=2)   # no account
    run(tmp_path, "account", "delete", "alice@a.test", code=1)                      # has history


def _usage_error(tmp_path, *args) -> str:
    """A bad command line: exit status 2 and one line on stderr."""
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, (args, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_history_limit_is_bounded(tmp_path):
    run(tmp_path, "account", "add", "alice@a.test")
    for bad in ("-1", "0", "1001"):
        assert "--limit must be between 1 and 1000" in _usage_error(tmp_path, "ledger", "history", "alice@a.test",
                                                                     "--limit", bad)
    assert "--last" in _usage_error(tmp_path, "account", "show", "alice@a.test", "--last", "0")
    assert "--kind" in _usage_error(tmp_path, "ledger", "history", "alice@a.test", "--kind", "payment")
    assert json.loads(run(tmp_path, "ledger", "history", "alice@a.test", "--limit", "1000", "--json")) == []


def test_report_period_is_checked(tmp_path):
    run(tmp_path, "account", "add", "alice@a.test")
    out = tmp_path / "s.csv"
    statement = ["report", "statement", "--account", "alice@a.test", "-o", str(out)]
    assert _usage_error(tmp_path, *statement, "--from", "2026-12-10", "--to", "2026-12-01") \
        == "error: --from must be before --to"
    assert "--from must be before --to" in _usage_error(tmp_path, *statement, "--from", "2026-12", "--to", "2026-11")
    error = _usage_error(tmp_path, *statement, "--month", "2026-13")
    assert error.startswith("error: --month:") and "--from" not in error
    assert _usage_error(tmp_path, *statement, "--month", "2026-11-05").startswith("error: --month:")
    assert _usage_error(tmp_path, *statement, "--from", "yesterday").startswith("error: --from:")
    assert "--month or --from/--to" in _usage_error(tmp_path, *statement, "--month", "2026-11", "--from", "2026-11")
    assert not out.exists()
    assert "--from must be before --to" in _usage_error(tmp_path, "ledger", "check", "--from", "2026-12", "--to", "2026-11")
    run(tmp_path, *statement, "--from", "2026-12-01", "--to", "2026-12-01")      # one day: to is its end
    assert out.exists()
