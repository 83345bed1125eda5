"""The user / domain / alias commands, mounted on a stub of the main CLI."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from proxy.core.digest import compute_ha1
from proxy.provisioning.cli import alias_app, domain_app, user_app
from proxy.provisioning.store import ProvisioningStore, default_url


@pytest.fixture
def url(tmp_path):
    return default_url(tmp_path / "data")


@pytest.fixture
def run(url):
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context):
        # what the real main callback does after resolving --data-dir / --config
        ctx.obj = SimpleNamespace(provisioning_url=url)

    app.add_typer(user_app, name="user")
    app.add_typer(domain_app, name="domain")
    app.add_typer(alias_app, name="alias")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def failed(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    return result.stderr


def snapshot(url):
    store = ProvisioningStore(url)
    try:
        return store.snapshot()
    finally:
        store.close()


def test_domain_add_list_del(run):
    assert ok(run("domain", "add", "Example.TEST")) == "added domain example.test\n"
    assert "example.test" in ok(run("domain", "list"))
    assert failed(run("domain", "add", "example.test")) == "error: domain example.test already exists\n"
    ok(run("domain", "del", "example.test"))
    assert "example.test" not in ok(run("domain", "list"))


def test_user_add_with_password(run, url):
    ok(run("domain", "add", "example.test"))
    assert ok(run("user", "add", "alice@example.test", "--password", "s3cret")) == "added user alice@example.test\n"
    assert snapshot(url).credentials("alice", "example.test").password == "s3cret"


def test_user_add_ha1_only(run, url):
    ok(run("domain", "add", "example.test"))
    ok(run("user", "add", "bob@example.test", "-p", "s3cret", "--ha1-only"))
    creds = snapshot(url).credentials("bob", "example.test")
    assert creds.password is None and creds.ha1_md5 == compute_ha1("MD5", "bob", "example.test", "s3cret")


def test_user_add_imported_ha1(run, url):
    ok(run("domain", "add", "example.test"))
    ha1 = compute_ha1("MD5", "carol", "example.test", "pw")
    ok(run("user", "add", "carol@example.test", "--ha1", ha1))
    assert snapshot(url).credentials("carol", "example.test").ha1_md5 == ha1


def test_user_list_never_shows_secrets(run):
    ok(run("domain", "add", "example.test"))
    ok(run("domain", "add", "other.test"))
    ok(run("user", "add", "alice@example.test", "--password", "s3cret"))
    ok(run("user", "add", "bob@other.test", "--password", "hunter2", "--ha1-only"))
    out = ok(run("user", "list"))
    assert "alice" in out and "bob" in out and "plaintext" in out and "ha1" in out
    assert "s3cret" not in out and "hunter2" not in out
    only_other = ok(run("user", "list", "--domain", "other.test"))
    assert "bob" in only_other and "alice" not in only_other


def test_user_passwd_and_del(run, url):
    ok(run("domain", "add", "example.test"))
    ok(run("user", "add", "alice@example.test", "--password", "old"))
    ok(run("alias", "add", "1001@example.test", "alice@example.test"))
    assert ok(run("user", "passwd", "alice@example.test", "new")) == "password changed for alice@example.test\n"
    assert snapshot(url).credentials("alice", "example.test").password == "new"
    ok(run("user", "passwd", "alice@example.test", "newer", "--ha1-only"))
    assert snapshot(url).credentials("alice", "example.test").password is None
    assert ok(run("user", "del", "alice@example.test")) == "deleted user alice@example.test and 1 alias(es)\n"
    assert snapshot(url).users == {}


def test_alias_add_list_del(run, url):
    ok(run("domain", "add", "example.test"))
    ok(run("user", "add", "alice@example.test", "--password", "pw"))
    assert ok(run("alias", "add", "1001@example.test", "alice@example.test")) == \
        "added alias 1001@example.test -> alice@example.test\n"
    out = ok(run("alias", "list"))
    assert "1001@example.test" in out and "alice@example.test" in out
    assert snapshot(url).resolve("1001", "example.test") == ("alice", "example.test")
    ok(run("alias", "del", "1001@example.test"))
    assert snapshot(url).aliases == {}


@pytest.mark.parametrize("args, message", [
    (("user", "add", "alice@nowhere.test", "--password", "x"), "domain nowhere.test is not served here"),
    (("user", "add", "alice", "--password", "x"), "expected user@domain"),
    (("user", "add", "alice@example.test"), "give either a password or an HA1 hash"),
    (("user", "add", "alice@example.test", "--ha1", "nothex"), "HA1 must be 32 hexadecimal digits"),
    (("user", "del", "ghost@example.test"), "user ghost@example.test does not exist"),
    (("user", "passwd", "ghost@example.test", "x"), "user ghost@example.test does not exist"),
    (("domain", "del", "nowhere.test"), "domain nowhere.test does not exist"),
    (("domain", "add", "bad domain"), "invalid domain"),
    (("alias", "add", "1001@example.test", "ghost@example.test"), "is not a user"),
    (("alias", "del", "1001@example.test"), "alias 1001@example.test does not exist"),
])
def test_errors_are_one_line_on_stderr(run, args, message):
    ok(run("domain", "add", "example.test"))
    assert message in failed(run(*args))


def test_duplicate_user(run):
    ok(run("domain", "add", "example.test"))
    ok(run("user", "add", "alice@example.test", "--password", "x"))
    assert failed(run("user", "add", "alice@example.test", "--password", "y")) == \
        "error: user alice@example.test already exists\n"


def test_unusable_database_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context):
        ctx.obj = SimpleNamespace(provisioning_url=f"sqlite:///{tmp_path}/file/sub/p.sqlite")

    app.add_typer(domain_app, name="domain")
    result = CliRunner().invoke(app, ["domain", "list"])
    assert result.exit_code == 1 and result.stderr.startswith("error: provisioning database")
    assert result.stderr.count("\n") == 1


def test_no_database_configured():
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context):
        ctx.obj = SimpleNamespace(provisioning_url="")

    app.add_typer(domain_app, name="domain")
    result = CliRunner().invoke(app, ["domain", "list"])
    assert (result.exit_code, result.stderr) == (1, "error: no provisioning database configured\n")
