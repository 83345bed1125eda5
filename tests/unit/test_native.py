"""The compiled proxy modules (proxy/native.py): loaded when current, never when stale."""
from __future__ import annotations

import json
import os
import shutil
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


# --- a build named by SIPLEDGER_NATIVE_DIR (an installed package: compose/Dockerfile) -----

def _build_in(directory, sources=None) -> dict:
    """A build's manifest and files as scripts/build_native.py lays them out: the shims
    and the group library are empty files (built() checks them, never loads them)."""
    files = {m: m.replace(".", "/") + native.abi_tag() for m in native.MODULES}
    files["0123456789abcdef0123__mypyc"] = "0123456789abcdef0123__mypyc" + native.abi_tag()
    for rel in files.values():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(b"")
    manifest = {"abi": native.abi_tag(), "files": files,
                "sources": sources or {m: native.digest(native.source_of(m)) for m in native.MODULES}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _status_with(env_dir: str, native_flag: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("SIPLEDGER_NATIVE", "SIPLEDGER_NATIVE_DIR")}
    env["SIPLEDGER_NATIVE_DIR"] = env_dir
    if native_flag is not None:
        env["SIPLEDGER_NATIVE"] = native_flag
    # only the status: the files of a fake build are never imported
    out = subprocess.run([sys.executable, "-c", "import proxy; print(proxy.native.status())"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_the_named_build_is_the_one_checked(tmp_path):
    _build_in(tmp_path)
    assert _status_with(str(tmp_path)) == f"on ({len(native.MODULES)} modules compiled with mypyc)"
    assert _status_with(str(tmp_path), "0") == "off (SIPLEDGER_NATIVE=0)"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert _status_with(str(empty)) == f"off (no build in {empty}: scripts/build_native.py --out)"
    # workers may start elsewhere: a relative directory would mean another build in each
    assert _status_with("build/native") == "off (SIPLEDGER_NATIVE_DIR=build/native is not an absolute path)"


def test_a_build_of_other_sources_is_refused(tmp_path):
    """The image's build is checked against the installed sources it runs, like the
    checkout's: a build made from another version of one module is not loaded."""
    sources = {m: native.digest(native.source_of(m)) for m in native.MODULES}
    _build_in(tmp_path, {**sources, "proxy.sip.via": "0" * 64})
    assert native.built(tmp_path) == (None, "off (proxy.sip.via changed since the build: rebuild)")
    _build_in(tmp_path, {m: sha for m, sha in sources.items() if m != "proxy.sip.via"})
    assert native.built(tmp_path) == (None, "off (built for another Python or module list: rebuild)")


def test_a_build_for_another_python_is_refused(tmp_path):
    manifest = _build_in(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "abi": ".cpython-312-x86_64-linux-gnu.so"}))
    assert native.built(tmp_path) == (None, "off (built for another Python or module list: rebuild)")
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "files": ["not", "a", "mapping"]}))
    assert native.built(tmp_path) == (None, "off (unreadable manifest: rebuild)")


@pytest.mark.parametrize("damage", ["file deleted", "module unlisted", "file outside the build"])
def test_a_build_missing_any_module_is_not_loaded_at_all(tmp_path, damage):
    """All or none: one module left to the interpreter would meet compiled ones."""
    build = tmp_path / "native"
    manifest = _build_in(build)
    assert native.built(build)[0] is not None
    files = dict(manifest["files"])
    if damage == "file deleted":
        (build / files["proxy.core.engine"]).unlink()
    elif damage == "module unlisted":
        del files["proxy.core.engine"]
    else:
        (tmp_path / "engine.so").write_bytes(b"")
        files["proxy.core.engine"] = "../engine.so"
    (build / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    assert native.built(build) == (None, "off (build incomplete: rebuild)")


def test_the_named_build_runs_the_compiled_modules(tmp_path):
    """The checkout's own build copied elsewhere and named: its modules are the ones imported."""
    if native.built(native.CHECKOUT_BUILD_DIR)[0] is None:
        pytest.skip(f"no current build: {native.built(native.CHECKOUT_BUILD_DIR)[1]}")
    shutil.copytree(native.CHECKOUT_BUILD_DIR, tmp_path / "native")
    env = {k: v for k, v in os.environ.items() if k != "SIPLEDGER_NATIVE"}
    env["SIPLEDGER_NATIVE_DIR"] = str(tmp_path / "native")
    out = subprocess.run([sys.executable, "-c", "import proxy, proxy.core.engine as e; "
                          "print(proxy.native.status()); print(e.__file__)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    status, file = out.stdout.splitlines()
    assert status.startswith("on")
    assert file == str(tmp_path / "native" / "proxy" / "core" / ("engine" + native.abi_tag()))
