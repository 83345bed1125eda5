"""The compiled proxy modules (proxy/native.py): loaded when current, never when stale."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from proxy import native

ROOT = native.ROOT


def _imported_from(env_native: str | None) -> str:
    env = dict(os.environ)
    env.pop("SIPLEDGER_NATIVE", None)
    if env_native is not None:
        env["SIPLEDGER_NATIVE"] = env_native
    out = subprocess.run([sys.executable, "-c", "import proxy, proxy.core.engine as e; "
                          "print(proxy.native.status()); print(e.__file__)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


@pytest.mark.skipif(os.environ.get("SIPLEDGER_NATIVE") == "0", reason="the pure-Python run")
def test_the_suite_runs_the_compiled_modules():
    """./quickstart.sh builds them; a failed build must not pass unnoticed."""
    assert native.active(), native.status()
    import proxy.sip.message as message
    assert message.__file__.endswith(native.abi_tag())
    assert str(native.BUILD_DIR) in message.__file__


def test_native_off_loads_the_sources():
    status, file = _imported_from("0").splitlines()
    assert status == "off (SIPLEDGER_NATIVE=0)"
    assert file == str(ROOT / "proxy" / "core" / "engine.py")


def test_a_changed_source_is_not_loaded(tmp_path, monkeypatch):
    if native._plan()[0] is None:
        pytest.skip(f"no current build: {native.status()}")
    edited = tmp_path / "engine.py"
    edited.write_text(native.source_of("proxy.core.engine").read_text() + "\n# edited\n")
    real = native.source_of
    monkeypatch.setattr(native, "source_of",
                        lambda module: edited if module == "proxy.core.engine" else real(module))
    files, why = native._plan()
    assert files is None
    assert why == "off (proxy.core.engine changed since the build: rebuild)"


def test_without_a_build_the_sources_run(tmp_path, monkeypatch):
    monkeypatch.delenv("SIPLEDGER_NATIVE", raising=False)
    monkeypatch.setattr(native, "MANIFEST", tmp_path / "manifest.json")
    assert native._plan() == (None, "off (not built: scripts/build_native.py)")
    (tmp_path / "manifest.json").write_text('{"abi": "another-python.so", "sources": {}, "files": {}}')
    assert native._plan() == (None, "off (built for another Python or module list: rebuild)")


def test_install_after_an_import_refuses_to_mix():
    """A module imported before install() would meet compiled ones: none are swapped in."""
    out = subprocess.run([sys.executable, "-c",
                          "import sys, proxy.native as n; "
                          "sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, n._NativeFinder)]; "
                          "sys.modules['proxy.sip.message'] = object(); print(n.install())"],
                         cwd=ROOT, env={**os.environ, "SIPLEDGER_NATIVE": "1"}, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "off (proxy.sip.message was imported first)"
