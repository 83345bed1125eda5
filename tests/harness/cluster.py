"""Several `python -m proxy run` instances on one PostgreSQL location store
(docs/scale-out.md), for the scale-out tests and bench/scale_out_rate.py:
instance A on 127.0.0.2, B on 127.0.0.3 (Linux loopback answers all of
127/8), each trusting the other, one [auth] secret, provisioned alike: each
its own SQLite provisioning file, or one shared provisioning database
(``provisioning_url``, provisioned once)."""
from __future__ import annotations

from typer.testing import CliRunner

from api.cli import app
from tests.harness.calls import DOMAIN, PASSWORDS
from tests.harness.proxy import proxy_run
from tests.harness.sipp import free_udp_port

A, B = "127.0.0.2", "127.0.0.3"
CONFIG = """\
[proxy]
listen = "{listen}"
workers = {workers}
trusted_sources = ["{peer}/32"]
{proxy_extra}
[auth]
algorithms = ["MD5"]
secret = "one secret for the whole cluster"
[registrar]
location_url = "{url}"
[authorization]
{authorization}
[provisioning]
reload_seconds = 0.25
{provisioning}
"""


def provision(data_dir, config=None) -> None:
    """The test domain and users (tests/harness/calls.py), through the CLI: into
    ``data_dir``'s SQLite file, or the database ``config`` names."""
    where = ["--data-dir", str(data_dir), *(["--config", str(config)] if config else [])]
    for args in (["domain", "add", DOMAIN], *(["user", "add", f"{u}@{DOMAIN}", "--password", p]
                                               for u, p in PASSWORDS.items())):
        result = CliRunner().invoke(app, [*where, *args])
        assert result.exit_code == 0, result.output


class ProxyPair:
    """``with ProxyPair(tmp, url, bootstrap) as [((host, port), proc), ...]``: A then B,
    started and READY; stopped (by PID) on exit, also when the start failed.  ``extra``
    is appended to both configs, ``proxy_extra`` to their [proxy] section;
    ``authorization`` is the [authorization] section's body (off by default);
    ``workers`` per instance; ``provisioning_url`` one provisioning database for
    both (else a SQLite file each)."""

    def __init__(self, tmp, url, bootstrap, extra: str = "", workers: int = 1, *,
                 proxy_extra: str = "", authorization: str = "enabled = false", provisioning_url: str = ""):
        self.tmp, self.url, self.bootstrap, self.extra, self.runs = tmp, url, bootstrap, extra, []
        self.workers, self.proxy_extra, self.authorization = workers, proxy_extra, authorization
        self.provisioning_url = provisioning_url
        self.configs: list = []

    def __enter__(self):
        addrs = []
        try:
            for name, listen, peer in (("a", A, B), ("b", B, A)):
                data = self.tmp / name
                config = self.tmp / f"{name}.toml"
                shared = f'url = "{self.provisioning_url}"' if self.provisioning_url else ""
                config.write_text(CONFIG.format(listen=listen, peer=peer, url=self.url, workers=self.workers,
                                                 proxy_extra=self.proxy_extra, authorization=self.authorization,
                                                 provisioning=shared)
                                  + self.extra)
                self.configs.append(config)
                if not (self.provisioning_url and self.runs):          # a shared database: once
                    provision(data, config if self.provisioning_url else None)
                port = free_udp_port(listen)
                run = proxy_run(data, config, port, self.bootstrap)
                proc = run.__enter__()
                self.runs.append(run)
                addrs.append(((listen, port), proc))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return addrs

    def __exit__(self, *exc):
        for run in reversed(self.runs):
            run.__exit__(None, None, None)


