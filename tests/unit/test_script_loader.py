"""Routing modules load whole or not at all, with the file and line of the problem."""
from __future__ import annotations

import pytest

from proxy.script.loader import RoutingScriptError, load_script


def test_default_module_has_a_route():
    assert callable(load_script(None).route)


def test_operator_module_is_loaded(tmp_path):
    path = tmp_path / "my_routes.py"
    path.write_text("def route(ctx):\n    return ctx.reply(404)\n")
    assert load_script(str(path)).route.__code__.co_filename == str(path)


@pytest.mark.parametrize("source, where", [
    ("def route(ctx):\n    if True\n        pass\n", ":2:"),
    ("x = 1\nraise ValueError('bad constant')\ndef route(ctx): pass\n", ":2: ValueError: bad constant"),
    ("import no_such_module_anywhere\n", ":1: ModuleNotFoundError"),
    ("def failure(ctx, r): pass\n", "defines no route(ctx)"),
])
def test_broken_modules_are_refused_with_file_and_line(tmp_path, source, where):
    path = tmp_path / "broken.py"
    path.write_text(source)
    with pytest.raises(RoutingScriptError) as err:
        load_script(str(path))
    assert str(path) in str(err.value) and where in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(RoutingScriptError, match="cannot read"):
        load_script(str(tmp_path / "absent.py"))


def test_up_refuses_a_broken_script_before_starting_anything(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "bad.py"
    script.write_text("def route(ctx)\n")
    config = tmp_path / "sipledger.toml"
    config.write_text(f'[proxy]\nrouting_script = "{script}"\n')
    out = subprocess.run([sys.executable, "-m", "api.cli", "--data-dir", str(tmp_path / "d"),
                          "--config", str(config), "up"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{script}:1:" in lines[0]


def test_a_relay_cause_outside_the_contract_is_refused_before_any_call_exists(tmp_path):
    """relay(cause=...) names why a branch exists on the wire (events.LegCause):
    a typo in an operator's module gets 500 and nothing is relayed."""
    from proxy.core.engine import Engine
    from proxy.script.runner import ScriptRouting
    from tests.harness.corefake import ALICE, CoreRig, invite

    script = tmp_path / "typo_routes.py"
    script.write_text("def route(ctx):\n    ctx.relay(cause='failvoer')\n")
    rig = CoreRig(tmp_path, auth=False)
    rig.engine = Engine(rig.core, ScriptRouting(rig.core, load_script(str(script))))
    out = rig.receive(invite(call_id="typo-1"), ALICE)
    assert [m.status for m, _ in out if m.status and m.status >= 200] == [500]
    assert not [m for m, _ in out if m.method == "INVITE"]          # nothing forwarded
    assert "typo-1" not in rig.core.calls                           # no call state left behind
    # the refusal is accounted for like any other (a CDR with 500), no leg was routed
    assert [type(e).__name__ for e in rig.effects.events] == ["InviteReceived", "CallFailed"]
