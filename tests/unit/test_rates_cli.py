"""`sipledger rates ...` (billing.rating.cli) with typer's CliRunner, on a stub and on the real main CLI."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from billing.rating.cli import rates_app
from billing.rating.csvfile import COLUMNS
from billing.rating.store import RatesStore
from proxy.infra.config import BillingSettings

HEADER = ",".join(COLUMNS)
GOOD = f"""\
{HEADER}
retail,49,Germany,0.05,0,60,60,0,half_up,4,EUR,,,,,
retail,4930,Berlin peak,0.1,0.2,60,1,0,up,5,EUR,,,mon-fri,08:00,18:00
retail,4930,Berlin off-peak,0.05,0.2,60,1,0,up,5,EUR,,,mon-fri,18:00,08:00
retail,4930,Berlin weekend,0.02,0.2,60,1,0,up,5,EUR,,,"sat,sun",,
"""


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def run(data_dir):
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context):
        # what the real main callback does after resolving --data-dir / --config
        ctx.obj = SimpleNamespace(data_dir=data_dir,
                                  config=SimpleNamespace(billing=BillingSettings(timezone="Europe/Berlin")))

    app.add_typer(rates_app, name="rates")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["rates", *args])
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def failed(result, lines: int = 1) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == lines
    return result.stderr


def write(tmp_path, text: str, name="rates.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_import_list_export_round_trip(run, tmp_path):
    assert ok(run("import", write(tmp_path, GOOD))) == "imported 4 rate(s): retail 4 (new plan)\n"
    listing = ok(run("list"))
    assert "retail" in listing and "Europe/Berlin" in listing and "EUR" in listing
    rates = ok(run("list", "--plan", "retail"))
    assert "4930" in rates and "60/1" in rates
    out = tmp_path / "out.csv"
    assert ok(run("export", "--plan", "retail", "-o", str(out))) == \
        f"exported 4 rate(s) of 1 plan(s) to {out}\n"
    exported = out.read_text()
    assert exported.splitlines()[0] == HEADER and len(exported.splitlines()) == 5
    assert ok(run("export")) == exported                                  # stdout, all plans
    assert ok(run("import", str(out), "--replace")) == "replaced with 4 rate(s): retail 4\n"
    assert ok(run("export")) == exported


def test_a_bad_file_changes_nothing_and_lists_every_bad_line(run, tmp_path):
    ok(run("import", write(tmp_path, GOOD)))
    before = ok(run("export"))
    bad = f"""\
{HEADER}
retail,33,France,0.05,,,,,,,,,,,,
retail,34,Spain,0,05,,,,,,,,,,,,
retail,49,Germany twice,0.05,,,,,,,,,,,,
retail,35,x,0.1,,,,,round,,,,,,,
"""
    err = failed(run("import", write(tmp_path, bad, "bad.csv")), lines=4)
    assert err.splitlines() == [
        f"error: {tmp_path / 'bad.csv'}: 3 bad line(s), nothing imported",
        "  line 3: has 17 fields, the header has 16",
        "  line 4: rate 49 (Germany twice) applies at the same time as rate 49 (Germany) already in "
        "plan retail (--replace replaces the plan's rates)",
        "  line 5: rounding 'round' must be one of up, down, half_up, half_even",
    ]
    assert ok(run("export")) == before                 # line 2 (France) was fine, but was not imported


def test_import_with_plan_option_bom_and_replace(run, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffprefix,price_per_min,name\n49,0.05,Germany\n".encode())
    assert ok(run("import", str(path), "--plan", "wholesale", "--timezone", "UTC")) == \
        "imported 1 rate(s): wholesale 1 (new plan)\n"
    assert "UTC" in ok(run("list"))


@pytest.mark.parametrize("args,message", [
    (("import", "/nonexistent/rates.csv"), "error: /nonexistent/rates.csv: No such file or directory\n"),
    (("list", "--plan", "nope"), "error: plan nope does not exist\n"),
    (("export", "--plan", "nope"), "error: plan nope does not exist\n"),
    (("assign", "alice@x", "nope"), "error: plan nope does not exist\n"),
    (("delete", "nope"), "error: plan nope does not exist\n"),
    (("test", "nope", "49"), "error: plan nope does not exist\n"),
])
def test_errors_are_one_line(run, args, message):
    assert failed(run(*args)) == message


def test_a_file_that_is_not_text(run, tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert failed(run("import", str(path))) == f"error: {path}: not UTF-8 text\n"


def test_assign_and_delete(run, tmp_path, data_dir):
    ok(run("import", write(tmp_path, GOOD)))
    assert ok(run("assign", "alice@example.test", "retail")) == "account alice@example.test -> plan retail\n"
    with RatesStore(BillingSettings().database_url(data_dir)) as store:
        assert store.assignments() == {"alice@example.test": "retail"}
    assert failed(run("delete", "retail")) == \
        "error: plan retail is assigned to 1 account(s); reassign them first\n"
    assert ok(run("unassign", "alice@example.test")) == "account alice@example.test has no plan now\n"
    assert ok(run("delete", "retail")) == "deleted plan retail and its 4 rate(s)\n"


def test_rate_a_call_and_show_the_breakdown(run, tmp_path):
    ok(run("import", write(tmp_path, GOOD)))
    out = ok(run("test", "retail", "sip:+4930123@example.test", "--duration", "85",
                 "--at", "2025-01-06T17:59:30", "--credit", "1"))
    assert out.splitlines() == [
        "plan retail, number 4930123, answered 2025-01-06T17:59:30.000+01:00, duration 85.000 s, currency EUR",
        "connect fee 0.2 (rate 4930)",
        "part 1: rate 4930 'Berlin peak' from 2025-01-06T17:59:30.000+01:00, used 60.000 s, billed 60 s "
        "(1x60 s) x 0.1/min / 60 = 0.1 -> up 5 dp = 0.10000",
        "part 2: rate 4930 'Berlin off-peak' from 2025-01-06T18:00:30.000+01:00, used 25.000 s, billed 25 s "
        "(25x1 s) x 0.05/min / 60 = 0.02083333... -> up 5 dp = 0.02084",
        "total 0.2 + 0.10000 + 0.02084 = 0.32084 -> up 5 dp = 0.32084 EUR",
        "credit 1 EUR lasts 900 s",
    ]
    weekday_noon = ok(run("test", "retail", "4930", "-d", "85", "--at", "2025-01-06T12:00:00+01:00"))
    assert weekday_noon.splitlines()[-1] == "total 0.2 + 0.14167 = 0.34167 -> up 5 dp = 0.34167 EUR"
    assert failed(run("test", "retail", "4930", "-d", "1.0001")) == \
        "error: duration '1.0001' has more than millisecond precision\n"
    assert failed(run("test", "retail", "4930", "-d", "-5")) == \
        "error: duration '-5' is not a plain decimal number like 0.015\n"
    assert failed(run("test", "retail", "33", "--at", "2025-01-06T12:00:00Z")) == \
        "error: plan retail has no rate for 33 at 2025-01-06T13:00:00.000+01:00\n"


# -- the real main CLI: mounting and the [billing] config section ------------------------

def test_mounted_on_the_main_cli_with_a_billing_section(tmp_path):
    from api.cli import app
    data = tmp_path / "data"
    data.mkdir()
    db = tmp_path / "elsewhere" / "rates.sqlite"
    (data / "sipledger.toml").write_text(
        f'[billing]\ndb_url = "sqlite:///{db}"\ncurrency = "USD"\ntimezone = "America/New_York"\n')
    csv_file = write(tmp_path, "plan,prefix,price_per_min\nus,1,0.01\n")
    runner = CliRunner()
    result = runner.invoke(app, ["--data-dir", str(data), "rates", "import", csv_file])
    assert result.exit_code == 0, result.stderr
    assert db.exists() and not (data / "billing.sqlite").exists()
    listing = runner.invoke(app, ["--data-dir", str(data), "rates", "list"]).stdout
    assert "USD" in listing and "America/New_York" in listing


@pytest.mark.parametrize("section,message", [
    ('currency = "euro"', "key 'billing.currency': must be an ISO 4217 code like EUR"),
    ('timezone = "Mars/Base"', "key 'billing.timezone': must be an IANA zone"),
    ('colour = "red"', "key 'billing.colour'"),
])
def test_a_bad_billing_section_is_a_one_line_config_error(tmp_path, section, message):
    from api.cli import app
    cfg = tmp_path / "sipledger.toml"
    cfg.write_text(f"[billing]\n{section}\n")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "--config", str(cfg), "rates", "list"])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
