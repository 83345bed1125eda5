"""The provisioning routes (/v1/users ... /v1/tokens): each resource's create, list,
get, update (where the CLI has one) and delete, and a refusal whose ``detail`` is
the very line `sipledger <command>` prints -- both go through one service layer
(docs/provisioning.md).  Auth (admin only) is tests/api/test_auth.py's."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.main import refusal_status

pytestmark = pytest.mark.integration

DOMAIN = "prov.test"


@pytest.fixture(scope="module")
def env(billing_api):
    return billing_api


def cli_refusal(env, *args: str) -> str:
    """What `sipledger ARGS` says when it refuses (on the API's own data dir)."""
    result = CliRunner().invoke(cli_app, ["--data-dir", str(env.data), *args])
    assert result.exit_code == 1, (args, result.output)
    line = result.stderr.strip()
    assert line.startswith("error: "), line
    return line.removeprefix("error: ")


def ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def refused(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["detail"]


def same_refusal(env, response, status: int, *cli: str) -> None:
    """The REST refusal is the CLI's, word for word."""
    assert refused(response, status) == cli_refusal(env, *cli)


def test_domains_users_and_aliases(env):
    c = env.call
    assert ok(c("POST", "/v1/domains", json={"domain": DOMAIN.upper()}), 201) == {"domain": DOMAIN}
    same_refusal(env, c("POST", "/v1/domains", json={"domain": DOMAIN}), 409, "domain", "add", DOMAIN)
    same_refusal(env, c("POST", "/v1/domains", json={"domain": "bad domain"}), 400, "domain", "add", "bad domain")
    assert {"domain": DOMAIN} in ok(c("GET", "/v1/domains"))["items"]
    assert ok(c("GET", f"/v1/domains/{DOMAIN}")) == {"domain": DOMAIN}

    user = ok(c("POST", "/v1/users", json={"address": f"alice@{DOMAIN}", "password": "s3cret"}), 201)
    assert user["address"] == f"alice@{DOMAIN}" and user["storage"] == "plaintext"
    assert "password" not in user and "ha1" not in user
    same_refusal(env, c("POST", "/v1/users", json={"address": "bob@nowhere.test", "password": "x"}), 400,
                 "user", "add", "bob@nowhere.test", "--password", "x")
    same_refusal(env, c("POST", "/v1/users", json={"address": f"bob@{DOMAIN}"}), 400, "user", "add", f"bob@{DOMAIN}")
    assert ok(c("PATCH", f"/v1/users/alice@{DOMAIN}", json={"password": "n3w", "ha1_only": True}))["storage"] == "ha1"
    page = ok(c("GET", "/v1/users", params={"domain": DOMAIN, "limit": 1}))
    assert (page["total"], [u["address"] for u in page["items"]]) == (1, [f"alice@{DOMAIN}"])
    assert all("password" not in u for u in page["items"])
    assert ok(c("GET", f"/v1/users/alice@{DOMAIN}"))["storage"] == "ha1"
    same_refusal(env, c("GET", f"/v1/users/carol@{DOMAIN}"), 404, "user", "del", f"carol@{DOMAIN}")

    alias = {"alias": f"100@{DOMAIN}", "target": f"alice@{DOMAIN}"}
    assert ok(c("POST", "/v1/aliases", json=alias), 201) == alias
    assert ok(c("GET", f"/v1/aliases/100@{DOMAIN}")) == alias
    assert alias in ok(c("GET", "/v1/aliases"))["items"]
    same_refusal(env, c("POST", "/v1/aliases", json={"alias": f"alice@{DOMAIN}", "target": f"alice@{DOMAIN}"}), 409,
                 "alias", "add", f"alice@{DOMAIN}", f"alice@{DOMAIN}")
    same_refusal(env, c("DELETE", f"/v1/domains/{DOMAIN}"), 409, "domain", "del", DOMAIN)

    assert ok(c("DELETE", f"/v1/users/alice@{DOMAIN}")) == {"address": f"alice@{DOMAIN}", "aliases_deleted": 1}
    assert c("GET", f"/v1/aliases/100@{DOMAIN}").status_code == 404
    ok(c("DELETE", f"/v1/domains/{DOMAIN}"), 204)
    same_refusal(env, c("GET", f"/v1/domains/{DOMAIN}"), 404, "domain", "del", DOMAIN)


def test_gateways_carriers_and_routes(env):
    c = env.call
    gw = ok(c("POST", "/v1/gateways", json={"name": "gwa", "address": "192.0.2.10:5080", "probe": "always"}), 201)
    assert (gw["uri"], gw["probe_state"]) == ("sip:192.0.2.10:5080", "unknown")      # no proxy running
    ok(c("POST", "/v1/gateways", json={"name": "gwb", "address": "192.0.2.11"}), 201)
    same_refusal(env, c("POST", "/v1/gateways", json={"name": "gwc", "address": "192.0.2.12", "transport": "sctp"}),
                 400, "gateway", "add", "gwc", "--address", "192.0.2.12", "--transport", "sctp")
    updated = ok(c("PUT", "/v1/gateways/gwb", json={"address": "192.0.2.13", "strip": 2}))
    assert (updated["host"], updated["strip"], updated["probe_state"]) == ("192.0.2.13", 2, "not_probed")
    assert [g["name"] for g in ok(c("GET", "/v1/gateways"))["items"]] == ["gwa", "gwb"]

    carrier = {"name": "cx", "gateways": ["gwa", "gwb"], "weights": [70, 30], "attrs": ""}
    assert ok(c("POST", "/v1/carriers", json=carrier), 201) == carrier
    assert ok(c("PUT", "/v1/carriers/cx", json={"gateways": ["gwb"]}))["weights"] is None
    assert ok(c("GET", "/v1/carriers/cx"))["gateways"] == ["gwb"]
    assert [x["name"] for x in ok(c("GET", "/v1/carriers"))["items"]] == ["cx"]
    same_refusal(env, c("POST", "/v1/carriers", json={"name": "cy", "gateways": ["gwa", "gwa"]}), 400,
                 "carrier", "add", "cy", "--gateways", "gwa,gwa")

    route = ok(c("POST", "/v1/routes", json={"prefix": "49", "gateways": ["gwa", "#cx"], "time": "08:00-18:00",
                                              "weekdays": "1-5", "tz": "Europe/Berlin"}), 201)
    assert (route["gateways"], route["time"], route["weekdays"], route["groups"]) == \
        (["gwa", "#cx"], "08:00-18:00", "1-5", ["default"])
    rid = route["id"]
    same_refusal(env, c("POST", "/v1/routes", json={"prefix": "1", "gateways": ["nogw"]}), 400,
                 "route", "add", "--prefix", "1", "--gateways", "nogw")
    same_refusal(env, c("DELETE", "/v1/gateways/gwa"), 409, "gateway", "del", "gwa")
    assert ok(c("PUT", f"/v1/routes/{rid}", json={"prefix": "49", "gateways": ["gwa"]}))["time"] is None
    test = ok(c("GET", "/v1/routes/test", params={"number": "4930123"}))
    assert [(s["gateway"], s["uri"], s["route_id"]) for s in test["routes"]] == \
        [("gwa", "sip:4930123@192.0.2.10:5080", rid)]
    same_refusal(env, c("GET", "/v1/routes/test", params={"number": "33123"}), 404, "route", "test", "33123")
    assert [r["id"] for r in ok(c("GET", "/v1/routes"))["items"]] == [rid]
    assert ok(c("GET", f"/v1/routes/{rid}"))["prefix"] == "49"
    ok(c("DELETE", f"/v1/routes/{rid}"), 204)
    same_refusal(env, c("GET", f"/v1/routes/{rid}"), 404, "route", "del", str(rid))
    ok(c("DELETE", "/v1/carriers/cx"), 204)
    for name in ("gwa", "gwb"):
        ok(c("DELETE", f"/v1/gateways/{name}"), 204)
    same_refusal(env, c("GET", "/v1/gateways/gwa"), 404, "gateway", "del", "gwa")


def test_dialplans_and_their_test(env):
    c = env.call
    rule = ok(c("POST", "/v1/dialplans/3/rules", json={"match": r"^\+49(\d+)$", "repl": r"0\1"}), 201)
    assert (rule["dpid"], rule["subst"], rule["repl"]) == (3, None, r"0\1")
    same_refusal(env, c("POST", "/v1/dialplans/3/rules", json={"match": "(unclosed"}), 400,
                 "dialplan", "add", "3", "--match", "(unclosed")
    for method in ("GET", "POST"):
        test = ok(c(method, "/v1/dialplans/3/test", params={"number": "+4930123"}))
        assert (test["result"], test["rule"]["id"]) == ("030123", rule["id"])
    same_refusal(env, c("GET", "/v1/dialplans/3/test", params={"number": "+3312"}), 404,
                 "dialplan", "test", "3", "+3312")
    path = f"/v1/dialplans/3/rules/{rule['id']}"
    assert ok(c("PUT", path, json={"match": "^00", "subst": "^00", "repl": "+", "priority": 5}))["priority"] == 5
    assert ok(c("GET", "/v1/dialplans/3/test", params={"number": "0049"}))["result"] == "+49"
    assert ok(c("GET", path))["match"] == "^00"
    assert [r["id"] for r in ok(c("GET", "/v1/dialplans/3"))["items"]] == [rule["id"]]
    assert ok(c("GET", "/v1/dialplans"))["total"] == 1
    assert c("GET", f"/v1/dialplans/4/rules/{rule['id']}").status_code == 404        # another dialplan's rule
    ok(c("DELETE", path), 204)
    same_refusal(env, c("DELETE", path), 404, "dialplan", "del", str(rule["id"]))


def test_blacklists_and_trusted_sources(env):
    c = env.call
    entry = {"list": "default", "prefix": "0900", "exact": False, "code": 473, "reason": "Filtered Destination"}
    assert ok(c("POST", "/v1/blacklists", json={"list": "default", "prefix": "0900"}), 201) == entry
    same_refusal(env, c("POST", "/v1/blacklists", json={"list": "default", "prefix": "0900"}), 409,
                 "blacklist", "add", "default", "0900")
    same_refusal(env, c("POST", "/v1/blacklists", json={"list": "default", "prefix": "0901", "code": 200}), 400,
                 "blacklist", "add", "default", "0901", "--code", "200")
    assert ok(c("GET", "/v1/blacklists/default/entries/0900")) == entry
    assert ok(c("GET", "/v1/blacklists", params={"list": "default"}))["items"] == [entry]
    assert ok(c("GET", "/v1/blacklists/default/test", params={"number": "09001"}))["entry"] == entry
    assert ok(c("GET", "/v1/blacklists/default/test", params={"number": "0800"}))["blacklisted"] is False
    ok(c("DELETE", "/v1/blacklists/default/entries/0900"), 204)
    same_refusal(env, c("DELETE", "/v1/blacklists/default/entries/0900"), 404, "blacklist", "del", "default", "0900")

    source = ok(c("POST", "/v1/trusted", json={"cidr": "192.0.2.7", "proto": "udp", "tag": "carrier x"}), 201)
    assert source == {"cidr": "192.0.2.7/32", "proto": "udp", "tag": "carrier x"}
    same_refusal(env, c("POST", "/v1/trusted", json={"cidr": "192.0.2.300"}), 400, "trusted", "add", "192.0.2.300")
    assert ok(c("GET", "/v1/trusted/192.0.2.7/32", params={"proto": "udp"})) == source
    assert ok(c("GET", "/v1/trusted"))["items"] == [source]
    same_refusal(env, c("GET", "/v1/trusted/192.0.2.7/32"), 404, "trusted", "del", "192.0.2.7/32")
    ok(c("DELETE", "/v1/trusted/192.0.2.7/32", params={"proto": "udp"}), 204)
    assert ok(c("GET", "/v1/trusted"))["items"] == []


def test_groups_forwarding_and_media_servers(env):
    c = env.call
    ok(c("POST", "/v1/domains", json={"domain": "fw.test"}), 201)
    for user in ("bob", "carol"):
        ok(c("POST", "/v1/users", json={"address": f"{user}@fw.test", "password": "pw"}), 201)
    member = {"group": "intl", "address": "bob@fw.test"}
    assert ok(c("POST", "/v1/groups/members", json=member), 201) == member
    same_refusal(env, c("POST", "/v1/groups/members", json=member), 409, "group", "add", "bob@fw.test", "intl")
    assert ok(c("GET", "/v1/groups/members/intl/bob@fw.test")) == member
    assert ok(c("GET", "/v1/groups/members", params={"group": "intl"}))["items"] == [member]
    ok(c("DELETE", "/v1/groups/members/intl/bob@fw.test"), 204)
    same_refusal(env, c("DELETE", "/v1/groups/members/intl/bob@fw.test"), 404, "group", "del", "bob@fw.test", "intl")
    assert ok(c("PUT", "/v1/groups/requirements/00", json={"group": "intl"}))["previous"] is None
    assert ok(c("PUT", "/v1/groups/requirements/00", json={"group": "world"}))["previous"] == "intl"
    assert ok(c("GET", "/v1/groups/requirements/00"))["group"] == "world"
    assert ok(c("GET", "/v1/groups/requirements"))["items"] == [{"prefix": "00", "group": "world", "previous": None}]
    ok(c("DELETE", "/v1/groups/requirements/00"), 204)
    same_refusal(env, c("DELETE", "/v1/groups/requirements/00"), 404, "group", "unrequire", "00")

    vm = {"name": "voicemail", "uri": "sip:vm@192.0.2.50:5070"}
    assert ok(c("POST", "/v1/media-servers", json=vm), 201) == vm
    assert ok(c("GET", "/v1/media-servers/voicemail")) == vm and ok(c("GET", "/v1/media-servers"))["items"] == [vm]
    same_refusal(env, c("POST", "/v1/media-servers", json={"name": "vm2", "uri": "http://x"}), 400,
                 "forward", "media", "add", "vm2", "http://x")

    fw = ok(c("PATCH", "/v1/forwarding/bob@fw.test", json={"busy": "carol@fw.test", "no_answer": "voicemail",
                                                            "no_answer_timeout": 15}))
    assert (fw["busy"], fw["no_answer"], fw["no_answer_timeout"]) == ("sip:carol@fw.test", "voicemail", 15)
    assert fw["goes_to"] == {"busy": "sip:carol@fw.test", "no_answer": "sip:vm@192.0.2.50:5070"}
    fw = ok(c("PATCH", "/v1/forwarding/bob@fw.test", json={"busy": None}))           # no_answer is kept
    assert (fw["busy"], fw["no_answer"]) == (None, "voicemail")
    assert ok(c("GET", "/v1/forwarding/bob@fw.test"))["no_answer"] == "voicemail"
    assert [f["address"] for f in ok(c("GET", "/v1/forwarding"))["items"]] == ["bob@fw.test"]
    same_refusal(env, c("PATCH", "/v1/forwarding/bob@fw.test", json={}), 400, "forward", "set", "bob@fw.test")
    same_refusal(env, c("DELETE", "/v1/media-servers/voicemail"), 409, "forward", "media", "del", "voicemail")
    ok(c("DELETE", "/v1/forwarding/bob@fw.test"), 204)
    same_refusal(env, c("GET", "/v1/forwarding/bob@fw.test"), 404, "forward", "clear", "bob@fw.test")
    ok(c("DELETE", "/v1/media-servers/voicemail"), 204)


def test_tokens(env):
    c = env.call
    made = ok(c("POST", "/v1/tokens", json={"role": "account", "account": "dave@d.test", "name": "panel"}), 201)
    assert made["token"].startswith("slt_") and made["revoked_at"] is None
    assert c("GET", "/v1/cdrs", None, headers={"Authorization": f"Bearer {made['token']}"}).status_code == 200
    assert ok(c("GET", f"/v1/tokens/{made['id']}")) == {k: v for k, v in made.items() if k != "token"}
    assert made["id"] in {t["id"] for t in ok(c("GET", "/v1/tokens", params={"limit": 1000}))["items"]}
    same_refusal(env, c("POST", "/v1/tokens", json={"role": "account"}), 400, "token", "create", "--role", "account")
    ok(c("DELETE", f"/v1/tokens/{made['id']}"), 204)
    assert c("GET", "/v1/cdrs", None, headers={"Authorization": f"Bearer {made['token']}"}).status_code == 401
    assert ok(c("GET", f"/v1/tokens/{made['id']}"))["revoked_at"] is not None
    assert made["id"] not in {t["id"] for t in ok(c("GET", "/v1/tokens"))["items"]}
    same_refusal(env, c("DELETE", "/v1/tokens/nosuchid"), 404, "token", "revoke", "nosuchid")


def test_bounds_and_paging(env):
    c = env.call
    assert c("POST", "/v1/domains", json={"domain": "x" * 300}).status_code == 422
    assert c("POST", "/v1/domains", json={"domain": "a.test", "extra": 1}).status_code == 422     # misspelt key
    assert c("GET", "/v1/domains", params={"limit": 1001}).status_code == 422
    assert c("GET", "/v1/domains", params={"offset": -1}).status_code == 422
    assert c("GET", "/v1/users/" + "a" * 400).status_code == 422
    for name in ("p1.test", "p2.test", "p3.test"):
        ok(c("POST", "/v1/domains", json={"domain": name}), 201)
    every = ok(c("GET", "/v1/domains"))["items"]
    page = ok(c("GET", "/v1/domains", params={"limit": 2, "offset": 1}))
    assert (page["items"], page["total"], page["limit"], page["offset"]) == (every[1:3], len(every), 2, 1)
    assert {"domain": "p3.test"} in every and len(every) >= 3


@pytest.mark.parametrize("message, status", [
    ("route: gateway gw9 does not exist; add it with 'gateway add'", 400),     # a reference, not the resource
    ("domain x.test is not served here; add it with 'domain add x.test'", 400),
    ("conflicting change, already made by someone else; retry", 409),
    ("provisioning database sqlite:///x/provisioning.sqlite: disk I/O error", 503),
])
def test_refusal_status_reads_the_words(message, status):
    assert refusal_status(message) == status
