"""compose/docker-compose*.yml, checked without a Docker engine (compose/README.md).

Docker Compose itself validates and resolves the files (tests/harness/compose.py);
then every sipledger service's command is parsed by the program's own argument
parser, and its configuration — the mounted sipledger.toml plus the service's
SIPLEDGER__SECTION__KEY variables — is loaded by the product's own loader, so an
unknown flag, an unknown key or a value a program refuses fails here rather than
at `docker compose up`.  The addresses the config names must be the ones compose
gives the services."""
from __future__ import annotations

import argparse
import base64
import importlib
import importlib.util
import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from api.container import DEFAULT_METRICS_PORT
from api.container import parse_args as container_args
from proxy.infra.config import Config, ConfigError, load
from tests.harness.compose import (
    COMPOSE_DIR,
    MAIN,
    REPLICATED,
    dockerfile_commands,
    is_job,
    resolved,
    run_compose,
    sipledger_services,
)

READY = {"proxy": "PROXY READY", "cdr": "CDR READY", "billing": "BILLING READY", "radius": "RADIUS READY"}


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return resolved([MAIN])


@pytest.fixture(scope="module")
def services(model) -> dict[str, dict[str, Any]]:
    return sipledger_services(model)


@pytest.fixture(scope="module")
def running(services) -> dict[str, dict[str, Any]]:
    """The long-running sipledger services (not the init jobs)."""
    return {name: svc for name, svc in services.items() if not is_job(svc)}


# --- the Compose specification -------------------------------------------------------------

@pytest.mark.parametrize("files", [[MAIN], [MAIN, REPLICATED]], ids=["main", "replicated"])
def test_compose_validates_the_files(files):
    for profiles in ([], ["--profile", "*"]):
        result = run_compose(files, *profiles, "config", "--quiet")
        assert result.returncode == 0, result.stderr


def test_the_validator_refuses_what_the_specification_does_not_allow(tmp_path):
    """The check above can fail: an unknown key or a wrong type is an error."""
    text = MAIN.read_text()
    for bad, why in ((text.replace("  proxy-1:\n    <<: *proxy\n", "  proxy-1:\n    <<: *proxy\n    inits: true\n"), "inits"),
                     (text.replace("stop_grace_period: 20s", "stop_grace_period: [20]", 1), "stop_grace_period")):
        assert bad != text
        broken = tmp_path / "docker-compose.yml"
        broken.write_text(bad)
        result = run_compose([broken], "config", "--quiet")
        assert result.returncode != 0 and why in result.stderr, result.stderr


# --- commands: each program's own parser ---------------------------------------------------

class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.namespace = namespace


def parse_python_command(argv: list[str], monkeypatch) -> argparse.Namespace:
    """``python -m MODULE ARGS`` parsed by MODULE's own argparse parser (nothing runs:
    parsing ends the call).  A flag the program does not take fails the test."""
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    runs = f"{module}.__main__" if spec.submodule_search_locations is not None else module
    main = importlib.import_module(runs).main
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(_Parsed) as parsed:
            main(argv[3:])
    return parsed.value.namespace


def service_program(service: dict[str, Any]) -> tuple[list[str], str | None]:
    """The service's own command (inside `python -m api.container`), and the READY prefix
    the wrapper waits for (None for commands run bare)."""
    command = service["command"]
    if command[:3] == ["python", "-m", "api.container"]:
        wrapper = container_args(command[3:])
        return wrapper.command, wrapper.ready
    return command, None


def test_every_long_running_service_runs_under_the_container_wrapper(running):
    for name, service in running.items():
        inner, ready = service_program(service)
        assert ready is not None, f"{name}: not under python -m api.container (no /healthz, no metrics)"
        module = inner[2]
        expected = ("SINK READY" if "--no-api" in inner else "API READY") if module == "api.serve" else READY[module]
        assert ready == expected, f"{name}: waits for {ready!r}, {module} prints {expected!r}"


def test_every_python_command_is_a_module_taking_those_flags(running, monkeypatch):
    seen = set()
    for name, service in running.items():
        inner, _ = service_program(service)
        namespace = parse_python_command(inner, monkeypatch)
        seen.add(inner[2])
        if inner[2] == "proxy":
            assert namespace.mode == "run", name
    assert seen == {"proxy", "cdr", "billing", "radius", "api.serve"}


def test_init_jobs_are_sipledger_commands_it_accepts(services, tmp_path):
    from typer.testing import CliRunner

    from api.cli import app
    jobs = {name: svc for name, svc in services.items() if is_job(svc)}
    assert {tuple(svc["command"][:3]) for svc in jobs.values()} == {("sipledger", "kafka", "init-topics"),
                                                                    ("sipledger", "db", "migrate")}
    for name, job in jobs.items():
        # click parses every option before --help answers: an unknown one is an error (exit 2)
        result = CliRunner().invoke(app, [*job["command"][1:], "--help"],
                                    env={"SIPLEDGER_DATA_DIR": str(tmp_path), "SIPLEDGER_CONFIG": ""})
        assert result.exit_code == 0, f"{name}: {result.output}"


# --- configuration: the product's own loader ---------------------------------------------

def mounted_config(service: dict[str, Any]) -> Path:
    target = service["environment"]["SIPLEDGER_CONFIG"]
    sources = [v["source"] for v in service.get("volumes", []) if v["target"] == target]
    assert sources, f"{target} is not mounted"
    return Path(sources[0])


def service_config(service: dict[str, Any]) -> Config:
    """What the service loads: the mounted file and its SIPLEDGER__SECTION__KEY variables."""
    return load(mounted_config(service), environ=service["environment"])


def test_every_service_loads_its_config(services):
    configs = {name: service_config(svc) for name, svc in services.items()}
    for name, config in configs.items():
        assert config.kafka.mode == "external" and config.kafka.client_profile == "kafka", name
        assert config.clickhouse.backend == "server", name
    names = [c.node.name for name, c in configs.items() if not is_job(services[name])]
    assert len(set(names)) == len(names), f"node names repeat: {names}"


def test_a_key_the_loader_does_not_know_fails_the_check(services):
    """The check above can fail: one mistyped variable is enough."""
    service = dict(services["proxy-1"])
    service["environment"] = {**service["environment"], "SIPLEDGER__PROXY__SIP_PROT": "5060"}
    with pytest.raises(ConfigError, match="SIPLEDGER__PROXY__SIP_PROT: unknown key 'proxy.sip_prot'"):
        service_config(service)


def test_the_image_carries_the_same_config():
    """compose/Dockerfile bakes compose/config/sipledger.toml at the path compose mounts it on."""
    copies = [c.value for c in dockerfile_commands(COMPOSE_DIR / "Dockerfile") if c.cmd.upper() == "COPY"]
    assert ("compose/config/sipledger.toml", "/etc/sipledger/sipledger.toml") in copies


# --- the deployment's shape: Kafka, addresses, health, scale --------------------------------

def _seconds(duration: str) -> float:
    """A compose duration ("40s", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


def _brokers(model) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in model["services"].items() if s["image"].startswith("apache/kafka:")}


def test_kafka_is_three_kraft_brokers_replicating_every_topic(model, services):
    brokers = _brokers(model)
    assert len(brokers) == 3
    ids = {name: int(svc["environment"]["KAFKA_NODE_ID"]) for name, svc in brokers.items()}
    voters = ",".join(f"{node}@{name}:9093" for name, node in sorted(ids.items(), key=lambda kv: kv[1]))
    for name, svc in brokers.items():
        env = svc["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    assert len(set(ids.values())) == 3
    cluster_ids = {svc["environment"]["CLUSTER_ID"] for svc in brokers.values()}
    assert len(cluster_ids) == 1
    # kafka-storage format takes a UUID in base64url (22 characters), nothing else
    assert len(base64.urlsafe_b64decode(cluster_ids.pop() + "==")) == 16
    kafka = service_config(services["init-topics"]).kafka
    assert {s.split(":")[0] for s in kafka.bootstrap_servers.split(",")} == set(brokers)
    assert kafka.replication_factor == 3 > int(next(iter(brokers.values()))["environment"]["KAFKA_MIN_INSYNC_REPLICAS"])


def _address(model, name: str) -> str:
    return model["services"][name]["networks"]["sipledger"]["ipv4_address"]


def test_the_addresses_the_config_names_are_the_services(model, services):
    subnet = ipaddress.ip_network(model["networks"]["sipledger"]["ipam"]["config"][0]["subnet"])
    proxy, radius = (service_config(services[n]) for n in ("proxy-1", "radius"))
    # credit control: each billing instance announces its fixed address (billing_owner) and
    # listens on the port the single-instance setting names
    billings = [n for n, s in services.items() if _program(s) == "billing"]
    assert len(billings) >= 2
    for name in billings:
        billing = service_config(services[name])
        assert billing.credit.advertise == _address(model, name), name
        assert billing.credit.listen == "0.0.0.0" and billing.credit.port == proxy.authorization.port, name
    assert proxy.authorization.host == _address(model, billings[0])
    # the media relay: rtpengine's fixed address, the ng port its image listens on
    entry = next(c.value for c in dockerfile_commands(COMPOSE_DIR / "rtpengine" / "Dockerfile")
                 if c.cmd.upper() == "ENTRYPOINT")
    ng_port = next(arg for arg in entry if arg.startswith("--listen-ng=")).rsplit(":", 1)[1]
    assert proxy.media.enabled and not proxy.media.launch
    assert [r.url for r in proxy.media.rtpengines] == [f"udp:{_address(model, 'rtpengine')}:{ng_port}"]
    # RADIUS accounting: FreeRADIUS's fixed address, one secret on both sides
    assert [(s.host, s.port) for s in radius.radius.servers] == [(_address(model, "freeradius"), 1813)]
    assert radius.radius.servers[0].secret == model["services"]["freeradius"]["environment"]["RADIUS_SECRET"]
    for name in (*billings, "rtpengine", "freeradius"):
        assert ipaddress.ip_address(_address(model, name)) in subnet
    assert proxy.clickhouse.host in model["services"]


def _program(service: dict[str, Any]) -> str:
    """The module a service runs: proxy, cdr, billing, radius, api.serve ("" for the jobs)."""
    inner = service_program(service)[0]
    return inner[2] if inner[:2] == ["python", "-m"] else ""


def test_proxies_publish_their_own_port_and_advertise_the_public_address(model, services):
    proxies = {n: s for n, s in services.items() if _program(s) == "proxy"}
    assert len(proxies) >= 2
    ports = set()
    for name, svc in proxies.items():
        config = service_config(svc)
        published = {(p["target"], p["protocol"], int(p["published"])) for p in svc["ports"]}
        # the public port, and each worker's own (its Via and Record-Route name it: phones send there)
        own = range(config.proxy.worker_port_base, config.proxy.worker_port_base + config.proxy.workers)
        assert config.proxy.worker_port_base or config.proxy.workers == 1, f"{name}: workers on random ports"
        wanted = {config.proxy.sip_port, *(own if config.proxy.workers > 1 else ())}
        assert published == {(port, kind, port) for port in wanted for kind in ("udp", "tcp")}, name
        assert config.proxy.advertised_host not in ("", "0.0.0.0"), name
        ports.add(config.proxy.sip_port)
    assert len(ports) == len(proxies)


def test_the_api_publishes_the_port_it_listens_on(services, monkeypatch):
    api = services["api"]
    namespace = parse_python_command(service_program(api)[0], monkeypatch)
    assert [p["target"] for p in api["ports"]] == [namespace.api_port]
    assert namespace.api_host == "0.0.0.0" and namespace.no_sink


def test_every_service_has_a_health_check_and_jobs_run_first(model, services, running):
    for name, svc in model["services"].items():
        if name in services and is_job(svc):
            assert "healthcheck" not in svc or svc["healthcheck"].get("disable"), name
            continue
        check = svc.get("healthcheck")
        if check is None:                       # then the image it builds declares one
            build = Path(svc["build"]["context"]) / svc["build"].get("dockerfile", "Dockerfile")
            assert any(c.cmd.upper() == "HEALTHCHECK" for c in dockerfile_commands(build)), name
        else:
            assert not check.get("disable") and check["test"], name
    for name, svc in running.items():
        check = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{DEFAULT_METRICS_PORT}/healthz" in check, name
        assert svc["depends_on"]["init-topics"]["condition"] == "service_completed_successfully", name
        assert svc["init"] is True and svc["restart"] == "unless-stopped", name
        # compose's SIGKILL comes after the wrapper's own (else a slow stop loses the service's last words)
        grace = container_args(svc["command"][3:]).stop_grace
        assert _seconds(svc["stop_grace_period"]) >= grace + 5, name
    for name in ("api", "sink"):
        assert running[name]["depends_on"]["init-schema"]["condition"] == "service_completed_successfully"
    assert set(services["init-topics"]["depends_on"]) == set(_brokers(model))
    assert all(d["condition"] == "service_healthy" for d in services["init-topics"]["depends_on"].values())
    assert services["init-schema"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


def test_processors_scale_with_a_volume_and_an_id_of_their_own(services, monkeypatch):
    cdrs = {n: s for n, s in services.items() if service_program(s)[0][2:3] == ["cdr"]}
    assert len(cdrs) >= 2
    ids = {parse_python_command(service_program(s)[0], monkeypatch).worker_id for s in cdrs.values()}
    assert len(ids) == len(cdrs)
    data = [v["source"] for s in cdrs.values() for v in s["volumes"] if v["target"] == "/var/lib/sipledger/data"]
    assert len(set(data)) == len(cdrs)
    # a processor without a partition idles: the topics have enough for every one
    assert service_config(next(iter(cdrs.values()))).kafka.partitions >= len(cdrs)


def test_prometheus_scrapes_every_sipledger_service(running):
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "sipledger")
    sd = job["dns_sd_configs"][0]
    assert set(sd["names"]) == set(running) and sd["port"] == DEFAULT_METRICS_PORT


def test_grafana_provisions_the_dashboard_and_its_datasource(model):
    grafana = model["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "sipledger.yml").read_text())["providers"]
    dashboards = [target for target, source in mounts.items() if source == COMPOSE_DIR / "grafana" / "sipledger.json"]
    assert [str(Path(d).parent) for d in dashboards] == [providers[0]["options"]["path"]]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(s["type"], s["url"], s["isDefault"]) for s in sources] == [("prometheus", "http://prometheus:9090", True)]


def test_every_file_compose_mounts_exists():
    """Compose resolves bind mounts without looking: a missing file would be an empty
    directory in the container."""
    for files in ([MAIN], [MAIN, REPLICATED]):
        for name, svc in resolved(files)["services"].items():
            for volume in svc.get("volumes", []):
                if volume["type"] == "bind":
                    assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"


def test_the_replicated_option_names_its_services():
    """clickhouse/replicated.xml and keeper.xml name the servers docker-compose.replicated.yml runs."""
    import xml.etree.ElementTree as ElementTree
    model = resolved([MAIN, REPLICATED])
    servers = {n for n, s in model["services"].items() if s["image"].startswith("clickhouse/clickhouse-server:")}
    keepers = {n: s for n, s in model["services"].items() if s["image"].startswith("clickhouse/clickhouse-keeper:")}
    replicated = ElementTree.parse(COMPOSE_DIR / "clickhouse" / "replicated.xml").getroot()
    assert {r.findtext("host") for r in replicated.find("remote_servers").iter("replica")} == servers
    assert {n.findtext("host") for n in replicated.find("zookeeper").iter("node")} == set(keepers)
    assert {s["environment"]["CLICKHOUSE_REPLICA"] for n, s in model["services"].items() if n in servers} == servers
    keeper = ElementTree.parse(COMPOSE_DIR / "clickhouse" / "keeper.xml").getroot()
    raft = {(int(s.findtext("id")), s.findtext("hostname")) for s in keeper.iter("server")}
    assert raft == {(int(s["environment"]["KEEPER_SERVER_ID"]), n) for n, s in keepers.items()}
    ElementTree.parse(COMPOSE_DIR / "clickhouse" / "prometheus.xml")


# --- the shared stores: several proxies and billing instances need one database --------------

def _is_server_url(url: str) -> bool:
    return url.startswith("postgresql")


def shared_store_problems(model: dict[str, Any]) -> list[str]:
    """What stops several instances of a service from working as one: a store each
    instance would keep for itself.  Proxies (more than one) share registrations,
    subscribers and routing; billing instances (more than one) a partitioned ledger that
    the proxies consult for owners; the API lists live calls and provisions on the same
    database the proxies read.  Every URL must name the postgres service with its user,
    password and a database it creates, and every service using it must wait for it."""
    services = sipledger_services(model)
    postgres = model["services"].get("postgres")
    if postgres is None:
        return ["no postgres service"]
    env = postgres["environment"]
    user, password = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]
    init = [Path(v["source"]) for v in postgres.get("volumes", [])
            if v["type"] == "bind" and v["target"].startswith("/docker-entrypoint-initdb.d/")]
    databases = {env["POSTGRES_DB"], *(m.group(1) for path in init for m in
                                       re.finditer(r"CREATE DATABASE (\w+)", path.read_text()))}
    by_program: dict[str, list[str]] = {}
    for name, svc in services.items():
        by_program.setdefault(_program(svc), []).append(name)
    several_proxies = len(by_program.get("proxy", [])) > 1
    several_billings = len(by_program.get("billing", [])) > 1
    problems: list[str] = []

    def shared(name: str, key: str, url: str) -> str | None:
        if not _is_server_url(url):
            problems.append(f"{name}: {key} = {url!r}: not the shared postgres")
            return None
        parsed = make_url(url)
        if (parsed.host, parsed.username, parsed.password) != ("postgres", user, password) \
                or parsed.database not in databases:
            problems.append(f"{name}: {key} {parsed.render_as_string()} is not a database of the postgres service")
        if services[name].get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
            problems.append(f"{name}: uses postgres without waiting for its health check")
        return parsed.database

    # what must be ONE database for all its users: the registrations, the provisioning
    # (proxies and the API, which also lists the live calls from it), the ledger
    used: dict[str, set[str | None]] = {"registrations": set(), "provisioning": set(), "ledger": set()}
    for name, svc in services.items():
        if is_job(svc):
            continue
        config = service_config(svc)
        program = _program(svc)
        if program == "proxy" and several_proxies:
            used["registrations"].add(shared(name, "registrar.location_url", config.registrar.location_url))
            used["provisioning"].add(shared(name, "provisioning.url", config.provisioning.url))
        if program == "billing" and several_billings:
            if not config.billing.partitioned:
                problems.append(f"{name}: several billing instances need billing.partitioned")
            used["ledger"].add(shared(name, "billing.db_url", config.billing.db_url))
        if program == "proxy" and several_billings:
            used["ledger"].add(shared(name, "authorization.owners_url", config.authorization.owners_url))
        if program == "api.serve" and several_proxies:
            used["provisioning"].add(shared(name, "provisioning.url", config.provisioning.url))
    for what, databases in used.items():
        if len(databases) > 1:
            problems.append(f"{what}: in different databases {sorted(map(str, databases))}")
    return problems


def test_multi_instance_services_share_their_stores(model):
    assert shared_store_problems(model) == []
    assert shared_store_problems(resolved([MAIN, REPLICATED])) == []


def test_a_multi_instance_service_without_its_shared_store_fails_the_check(model):
    """The check above can fail: one proxy back on its own SQLite files, one billing
    instance on another ledger, the API on another (existing) database, the postgres
    service gone."""
    import copy
    broken = copy.deepcopy(model)
    del broken["services"]["proxy-2"]["environment"]["SIPLEDGER__REGISTRAR__LOCATION_URL"]
    broken["services"]["billing-2"]["environment"]["SIPLEDGER__BILLING__DB_URL"] = \
        broken["services"]["billing-2"]["environment"]["SIPLEDGER__BILLING__DB_URL"].replace("/billing", "/other")
    broken["services"]["api"]["environment"]["SIPLEDGER__PROVISIONING__URL"] = \
        broken["services"]["api"]["environment"]["SIPLEDGER__PROVISIONING__URL"].replace("/sipledger", "/billing")
    problems = shared_store_problems(broken)
    assert any(p.startswith("proxy-2: registrar.location_url = ''") for p in problems), problems
    assert any(p.startswith("billing-2: billing.db_url") and "not a database" in p for p in problems), problems
    assert any("ledger: in different databases" in p for p in problems), problems
    # the API on another existing database: each URL is fine alone, they do not meet
    assert "provisioning: in different databases ['billing', 'sipledger']" in problems, problems
    del broken["services"]["postgres"]
    assert shared_store_problems(broken) == ["no postgres service"]


def test_postgres_keeps_its_data_and_takes_its_password_from_the_environment(model):
    postgres = model["services"]["postgres"]
    assert any(v["type"] == "volume" and v["target"] == "/var/lib/postgresql/data" for v in postgres["volumes"])
    check = " ".join(postgres["healthcheck"]["test"])
    assert "pg_isready" in check and "127.0.0.1" in check      # TCP: not the init scripts' socket-only server
    assert "ports" not in postgres                              # inside the compose network only
    text = MAIN.read_text()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD" in text and "change-me@postgres" not in text
    assert "POSTGRES_PASSWORD=" in (COMPOSE_DIR / ".env.example").read_text()


def test_the_postgres_settings_are_ones_postgresql_15_has():
    """``postgres -c NAME=VALUE``: every NAME is a setting of Debian's PostgreSQL 15 (the
    image's major version); a misspelt one would stop the server at start."""
    from tests.harness.postgres import postgres_available, postgres_bin
    if not postgres_available():
        pytest.skip("PostgreSQL 15 (Debian postgresql) not installed")
    command = resolved([MAIN])["services"]["postgres"]["command"]
    assert command[0] == "postgres" and command[1::2] == ["-c"] * (len(command) // 2)
    names = {option.split("=", 1)[0] for option in command[2::2]}
    described = subprocess.run([postgres_bin("postgres"), "--describe-config"], capture_output=True, text=True,
                               timeout=30, check=True).stdout
    known = {line.split("\t", 1)[0] for line in described.splitlines()}
    assert names <= known, names - known
    assert {"tcp_keepalives_idle", "idle_in_transaction_session_timeout"} <= names
