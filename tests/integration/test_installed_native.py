"""compose/Dockerfile's recipe for the compiled proxy, run outside Docker (there is no
engine here): the package installed with pip (not editable) into a fresh virtual
environment, ``scripts/build_native.py --installed --out DIR`` compiling the sources
pip put in site-packages, then a proxy started outside the checkout with
``SIPLEDGER_NATIVE_DIR=DIR`` whose workers run them.  ~60 s, most of it gcc.

The one difference from the image: the fresh environment takes the dependencies (and
mypy, which the image puts in /opt/mypyc) from this test run's environment through a
``.pth`` line instead of downloading them; the package itself is pip's own install.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from proxy import native
from tests.harness.proxy import proxy_run
from tests.harness.sipp import free_udp_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler (the image's build stage has one)")]

CHECKOUT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SIPLEDGER_NATIVE", "SIPLEDGER_NATIVE_DIR")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's python, the build directory), made as the image's build stage does."""
    root = tmp_path_factory.mktemp("installed")
    # what compose/Dockerfile copies into the build (tests/compose checks that list)
    source = root / "src"
    source.mkdir()
    shutil.copy(CHECKOUT / "pyproject.toml", source / "pyproject.toml")
    packages = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for package in (p.rstrip("*") for p in packages["include"]):
        shutil.copytree(CHECKOUT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip())
    # dependencies after the environment's own site-packages: its installed proxy comes first
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip's own install (it builds the wheel with pyproject.toml's setuptools, as in the image)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                          str(source)], cwd=root, env=_env(), capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert (site / "proxy" / "native.py").is_file()
    out = root / "native"
    built = subprocess.run([str(python), str(CHECKOUT / "scripts" / "build_native.py"), "--installed", "--out", str(out)],
                           cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"from {site / 'proxy'} compiled into {out}" in built.stdout
    return python, out


def test_the_installed_proxy_runs_its_compiled_build(installed, tmp_path):
    python, out = installed
    probe = ("import proxy, proxy.sip.message as m; print(proxy.native.status()); "
             "print(proxy.__file__); print(m.__file__)")
    run = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=_env(SIPLEDGER_NATIVE_DIR=str(out)),
                         capture_output=True, text=True, check=True, timeout=60)
    status, package, message = run.stdout.splitlines()
    assert status == f"on ({len(native.MODULES)} modules compiled with mypyc)"
    assert not Path(package).is_relative_to(CHECKOUT)             # pip's copy, not this checkout
    assert message == str(out / "proxy" / "sip" / ("message" + native.abi_tag()))
    # without the variable the installed package finds no build of its own
    run = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.splitlines()[0] == "off (not built: scripts/build_native.py)"


def test_the_workers_log_the_compiled_modules(installed, tmp_path, broker):
    python, out = installed
    config = tmp_path / "sipledger.toml"
    config.write_text("[proxy]\nworkers = 2\n[authorization]\nenabled = false\n")   # no billing here
    with proxy_run(tmp_path / "data", config, free_udp_port(), broker.bootstrap,
                   python=python, cwd=tmp_path, env=_env(SIPLEDGER_NATIVE_DIR=str(out)), ready="PROXY READY workers=2") as proc:
        pass                                   # started: both workers have logged their modules
    logged = [line.split(" INFO ", 1)[1] for line in proc.stderr.read().splitlines()
              if "compiled proxy modules:" in line]
    assert logged == [f"compiled proxy modules: on ({len(native.MODULES)} modules compiled with mypyc)"] * 2


def test_an_edited_installed_source_is_not_run_compiled(installed, tmp_path):
    """The build is checked against site-packages' files, as the checkout's is against its own."""
    python, out = installed
    probe = "import proxy, proxy.core.engine as e; print(proxy.native.status()); print(e.__file__)"
    source = Path(subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=_env(SIPLEDGER_NATIVE="0"),
                                 capture_output=True, text=True, check=True, timeout=60).stdout.split()[-1])
    original = source.read_bytes()
    try:
        source.write_bytes(original + b"\n# edited after the build\n")
        run = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=_env(SIPLEDGER_NATIVE_DIR=str(out)),
                             capture_output=True, text=True, check=True, timeout=60)
    finally:
        source.write_bytes(original)
    assert run.stdout.splitlines() == ["off (proxy.core.engine changed since the build: rebuild)", str(source)]
