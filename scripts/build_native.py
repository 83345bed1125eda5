"""Compile the proxy's hot modules with mypyc into build/native/ (see proxy/native.py).

    .venv/bin/python scripts/build_native.py [--force]
    python scripts/build_native.py --installed --out DIR [--force]

Run by ./quickstart.sh after installing the project; does nothing when the
build matches the sources.  Needs a C compiler, the Python headers and mypy
(the quick start installs gcc and python3-dev when missing).  On failure it
prints one line and exits 1; the proxy then runs the same modules as pure
Python (proxy/native.py says so in the worker's start-up log).

``--installed`` compiles the ``proxy`` package this interpreter imports (a
``pip install .``, where the sources live in site-packages) instead of this
checkout's, and ``--out DIR`` writes the build there; the installed proxy
loads it when ``SIPLEDGER_NATIVE_DIR=DIR`` (compose/Dockerfile does both:
its build stage compiles, the final stage copies DIR without the compiler).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

CHECKOUT = Path(__file__).resolve().parent.parent

# mypy's settings for the compiled modules, the same wherever the sources are
# (pyproject.toml's [tool.mypy] is not installed): no config file, and the
# one setting of [tool.mypy] that is not mypy's default
MYPY_OPTIONS = ["--config-file=", "--ignore-missing-imports"]


def build(native: ModuleType, out: Path) -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    staging = out.with_name(out.name + ".new")
    work = out.with_name(out.name + ".work")
    for d in (staging, work):
        shutil.rmtree(d, ignore_errors=True)
    # mypy reads a copy of the package: beside an installed one, site-packages'
    # other modules would shadow the libraries mypy looks up (typing_extensions.py)
    src = work / "src"
    shutil.copytree(native.ROOT / "proxy", src / "proxy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    copied = {m: src / native.source_of(m).relative_to(native.ROOT) for m in native.MODULES}
    sources = {m: native.digest(path) for m, path in copied.items()}      # what was compiled
    log = io.StringIO()
    try:
        # mypyc names modules after paths relative to the working directory
        with contextlib.chdir(src), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            extensions = mypycify(MYPY_OPTIONS + [str(path.relative_to(src)) for path in copied.values()],
                                  opt_level="3", target_dir=str(work / "c"))
            dist = Distribution({"name": "sipledger-native", "ext_modules": extensions})
            command = dist.get_command_obj("build_ext")
            command.build_lib = str(staging)
            command.build_temp = str(work / "o")
            dist.run_command("build_ext")
    except BaseException as exc:      # mypyc reports type errors with SystemExit
        errors = [line for line in log.getvalue().splitlines() if ": error:" in line]
        raise RuntimeError(errors[0] if errors else f"{type(exc).__name__}: {exc}") from None
    suffix = native.abi_tag()
    files: dict[str, str] = {}
    for ext in extensions:
        rel = Path(*ext.name.split(".")).with_suffix("")
        path = staging / (str(rel) + suffix)
        if not path.exists():
            raise RuntimeError(f"{ext.name}: no {path.name} after the build")
        files[ext.name] = str(path.relative_to(staging))
    (staging / "manifest.json").write_text(json.dumps(
        {"abi": native.abi_tag(), "sources": sources, "files": files}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile the proxy's hot modules with mypyc (proxy/native.py).")
    parser.add_argument("--force", action="store_true", help="build even when the build matches the sources")
    parser.add_argument("--installed", action="store_true",
                        help="compile the proxy package this Python has installed, not this checkout's")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="the build directory (default: SIPLEDGER_NATIVE_DIR, else build/native "
                             "beside the sources); the proxy loads it from SIPLEDGER_NATIVE_DIR")
    args = parser.parse_args(argv)
    if not args.installed:
        sys.path.insert(0, str(CHECKOUT))
    os.environ["SIPLEDGER_NATIVE"] = "0"      # this process compiles the sources, never loads a build
    from proxy import native

    out = (args.out or native.BUILD_DIR).absolute()
    if not args.force and native.built(out)[0] is not None:
        print(f"native modules: up to date in {out}")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        build(native, out)
    except Exception as exc:
        print(f"native modules: build failed, the proxy runs pure Python: {exc}")
        return 1
    print(f"native modules: {len(native.MODULES)} from {native.ROOT / 'proxy'} compiled into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
