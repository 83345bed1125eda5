"""Compile the proxy's hot modules with mypyc into build/native/ (see proxy/native.py).

    .venv/bin/python scripts/build_native.py [--force]

Run by ./quickstart.sh after installing the project; does nothing when the
build matches the sources.  Needs a C compiler and the Python headers (the
quick start installs gcc and python3-dev when missing).  On failure it
prints one line and exits 1; the proxy then runs the same modules as pure
Python (proxy/native.py says so in the worker's start-up log).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ["SIPLEDGER_NATIVE"] = "0"      # this process compiles the sources, never loads a build
from proxy import native  # noqa: E402


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    root = native.ROOT
    sources = {m: native.digest(native.source_of(m)) for m in native.MODULES}
    staging = native.BUILD_DIR.with_name("native.new")
    work = native.BUILD_DIR.with_name("native.work")
    for d in (staging, work):
        shutil.rmtree(d, ignore_errors=True)
    os.chdir(root)                    # mypyc names modules after paths relative to here
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            extensions = mypycify([str(native.source_of(m).relative_to(root)) for m in native.MODULES],
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
    shutil.rmtree(native.BUILD_DIR, ignore_errors=True)
    staging.rename(native.BUILD_DIR)
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    if "--force" not in sys.argv and native.built()[0] is not None:
        print("native modules: up to date")
        return 0
    try:
        build()
    except Exception as exc:
        print(f"native modules: build failed, the proxy runs pure Python: {exc}")
        return 1
    print(f"native modules: {len(native.MODULES)} compiled into {native.BUILD_DIR.relative_to(native.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
