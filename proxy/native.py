"""The proxy's hot modules compiled with mypyc, loaded when they match the sources.

Issue 19 ("Speed") allows compiling the signalling path if the source stays
Python and a pure-Python fallback passes the same tests.  The modules below
are compiled by ``scripts/build_native.py`` (run by ``./quickstart.sh``)
into ``build/native/`` with a manifest of their sources' SHA-256; nothing is
written beside the sources, so a stale extension can never shadow a newer
``.py``.  An installed package (``pip install .``: the image,
compose/Dockerfile) has no checkout to hold ``build/``: its build is made
with ``scripts/build_native.py --installed --out DIR`` and named by
``SIPLEDGER_NATIVE_DIR=DIR``, and is checked the same way, against the
sources this interpreter imports.

``install()`` (called by ``proxy/__init__.py`` before any other
proxy module is imported) puts a finder in front of Python's own that loads
the compiled versions, all or none: mypyc compiles the group as one library
whose modules call each other directly, so a compiled engine must never meet
a pure-Python ``SipMessage``.  It loads none when

* ``SIPLEDGER_NATIVE=0`` is set (the pure-Python run of the tests),
* no build exists (or ``SIPLEDGER_NATIVE_DIR`` names no build, or is not
  an absolute path: workers may start in another directory), it was made for
  another Python, or it lacks a module, or
* any listed source changed since the build (a developer editing a file
  gets their edit, not the old extension; a build made from other sources
  than the installed ones is refused the same way).

``status()`` says which, for the worker's start-up log line.
"""
from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent      # the checkout, or site-packages when installed
CHECKOUT_BUILD_DIR = ROOT / "build" / "native"
# where this process loads the build from: the checkout's, unless the environment names one
BUILD_DIR = Path(os.environ.get("SIPLEDGER_NATIVE_DIR") or CHECKOUT_BUILD_DIR)
MANIFEST = BUILD_DIR / "manifest.json"

# The signalling path, per bench/proxy_cpu.py's profile: parsing, the
# transaction machines, the engine, the stateful proxy, dialogs, the routing
# context and the default script.
MODULES = (
    "proxy.sip.message", "proxy.sip.uri", "proxy.sip.via", "proxy.sip.headers", "proxy.sip.cache",
    "proxy.sip.build",
    "proxy.transactions.actions", "proxy.transactions.timers", "proxy.transactions.keys",
    "proxy.transactions.base", "proxy.transactions.invite_client", "proxy.transactions.invite_server",
    "proxy.transactions.noninvite_client", "proxy.transactions.noninvite_server",
    "proxy.core.engine", "proxy.core.txdriver", "proxy.core.dialogs", "proxy.core.forwarding",
    "proxy.core.callevents", "proxy.core.nat", "proxy.core.node", "proxy.core.stats",
    "proxy.script.context", "proxy.script.runner", "proxy.script.default",
)

_status = "not installed"


def source_of(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def abi_tag() -> str:
    """What an extension module is built for (a build for another Python is not loaded)."""
    return importlib.machinery.EXTENSION_SUFFIXES[0]


class _NativeFinder(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, Path]):
        self.files = files

    def find_spec(self, name, path=None, target=None):
        file = self.files.get(name)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(name, file)


def _plan() -> tuple[dict[str, Path] | None, str]:
    """The extension file for each module name, or None and why not."""
    if os.environ.get("SIPLEDGER_NATIVE", "1") == "0":
        return None, "off (SIPLEDGER_NATIVE=0)"
    return built()


def built(directory: Path | None = None) -> tuple[dict[str, Path] | None, str]:
    """The extension file for each module name of the build in ``directory``
    (default: ``BUILD_DIR``) if it is current, else None and why it is not
    (scripts/build_native.py asks this too: nothing to rebuild)."""
    base, manifest_file = (BUILD_DIR, MANIFEST) if directory is None else (directory, directory / "manifest.json")
    if not base.is_absolute():
        return None, f"off (SIPLEDGER_NATIVE_DIR={base} is not an absolute path)"
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        if base == CHECKOUT_BUILD_DIR:
            return None, "off (not built: scripts/build_native.py)"
        return None, f"off (no build in {base}: scripts/build_native.py --out)"
    try:
        abi, sources, names = manifest["abi"], dict(manifest["sources"]), dict(manifest["files"])
    except (KeyError, TypeError, ValueError):
        return None, "off (unreadable manifest: rebuild)"
    if abi != abi_tag() or set(sources) != set(MODULES):
        return None, "off (built for another Python or module list: rebuild)"
    for module, sha in sources.items():
        try:
            if digest(source_of(module)) != sha:
                return None, f"off ({module} changed since the build: rebuild)"
        except OSError:
            return None, f"off ({module} missing)"
    # all or none: every module has its file, inside the build (the manifest is data, not trusted paths)
    files = {name: base / str(rel) for name, rel in names.items()}
    inside = base.resolve()
    if (not set(MODULES) <= set(files)
            or not all(f.resolve().is_relative_to(inside) and f.is_file() for f in files.values())):
        return None, "off (build incomplete: rebuild)"
    return files, f"on ({len(MODULES)} modules compiled with mypyc)"


def install() -> str:
    """Load the compiled modules from now on, if they are current; returns ``status()``."""
    global _status
    if any(isinstance(f, _NativeFinder) for f in sys.meta_path):
        return _status
    loaded = [m for m in MODULES if m in sys.modules]
    if loaded:                         # too late to swap them in consistently
        _status = f"off ({loaded[0]} was imported first)"
        return _status
    files, _status = _plan()
    if files is not None:
        sys.meta_path.insert(0, _NativeFinder(files))
    return _status


def status() -> str:
    return _status


def active() -> bool:
    return _status.startswith("on")
