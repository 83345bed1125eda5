"""The images compose builds: hadolint, then their structure as BuildKit's parser reads them.

compose/README.md says: one image (compose/Dockerfile) on Debian bookworm's Python 3.11,
the package installed with pip and its signalling path compiled in a build stage, run as
a non-root user, every service a command of it; rtpengine and FreeRADIUS from Debian
bookworm.  Nothing here needs a Docker engine (tests/integration/test_installed_native.py
runs the build stage's commands outside Docker)."""
from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from api.container import DEFAULT_METRICS_PORT
from tests.harness.compose import COMPOSE_DIR, REPO, dockerfile_commands, hadolint, resolved

DOCKERFILES = sorted({Path(s["build"]["context"]) / s["build"].get("dockerfile", "Dockerfile")
                      for s in resolved()["services"].values() if "build" in s})


def test_compose_builds_these_three_images():
    assert [p.relative_to(COMPOSE_DIR) for p in DOCKERFILES] == [
        Path("Dockerfile"), Path("freeradius/Dockerfile"), Path("rtpengine/Dockerfile")]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(COMPOSE_DIR)))
def test_hadolint_passes(path):
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def _commands(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.cmd.upper(), tuple(c.value)) for c in dockerfile_commands(path)]


def _base(path: Path) -> str:
    """The FROM image, with an ARG default substituted."""
    commands = _commands(path)
    args = dict(v[0].split("=", 1) for cmd, v in commands if cmd == "ARG" and "=" in v[0])
    image = next(v[0] for cmd, v in commands if cmd == "FROM")
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(COMPOSE_DIR)))
def test_images_are_pinned_bookworm_and_run_as_a_user(path):
    base = _base(path)
    # a full version in the tag (never latest), on Debian 12 (bookworm)
    assert re.fullmatch(r"(python:3\.11\.\d+-slim-bookworm|debian:12\.\d+-slim)", base), base
    users = [v[0] for cmd, v in _commands(path) if cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert any(cmd == "HEALTHCHECK" for cmd, _ in _commands(path))


def test_the_sipledger_image_installs_the_package_with_pip():
    commands = _commands(COMPOSE_DIR / "Dockerfile")
    assert _base(COMPOSE_DIR / "Dockerfile").startswith("python:3.11.")
    copied = {v[0].rstrip("/") for cmd, v in commands if cmd == "COPY"}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} | {"pyproject.toml"} <= copied
    runs = [" ".join(v) for cmd, v in commands if cmd == "RUN"]
    assert any(re.search(r"\bpip install --no-cache-dir \.(\s|$)", run) for run in runs), runs
    # the console script the init jobs run, and the wrapper every service runs under
    assert "sipledger" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    user = next(v[0] for cmd, v in commands if cmd == "USER")
    assert any(f"--uid {user.split(':')[0]}" in run for run in runs)
    # its HEALTHCHECK asks the wrapper every service runs under, on its port
    check = " ".join(next(v for cmd, v in commands if cmd == "HEALTHCHECK"))
    assert f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/healthz" in check


def _stages(path: Path) -> list[list[tuple[str, tuple[str, ...], tuple[str, ...]]]]:
    """The Dockerfile's stages, each its commands as (instruction, flags, value)."""
    stages: list[list[tuple[str, tuple[str, ...], tuple[str, ...]]]] = []
    for c in dockerfile_commands(path):
        if c.cmd.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((c.cmd.upper(), tuple(c.flags), tuple(c.value)))
    return stages


def test_the_image_runs_the_compiled_proxy_without_a_compiler():
    """proxy/native.py: the build stage compiles the installed sources into the directory
    the final stage copies and names in SIPLEDGER_NATIVE_DIR, on the same Python (a build
    for another ABI is refused); the compiler stays in the build stage."""
    build, final = _stages(COMPOSE_DIR / "Dockerfile")
    assert build[0][2] == ("${PYTHON_IMAGE}", "AS", "build") and final[0][2] == ("${PYTHON_IMAGE}",)
    build_runs = [v[0] for cmd, _, v in build if cmd == "RUN"]
    assert any(re.search(r"apt-get install .*\bgcc\b", run) for run in build_runs), build_runs
    compiled = [run for run in build_runs if "scripts/build_native.py" in run]
    assert len(compiled) == 1 and "--installed" in compiled[0].split(), compiled
    out = re.search(r"--out (\S+)", compiled[0]).group(1)
    env = {}
    for cmd, _, v in final:
        if cmd == "ENV":
            env.update(zip(v[0::2], v[1::2]))
    assert env["SIPLEDGER_NATIVE_DIR"] == out
    assert env["PATH"].startswith("/opt/venv/bin:")
    copied = {v for cmd, flags, v in final if cmd == "COPY" and "--from=build" in flags}
    assert copied == {(out, out), ("/opt/venv", "/opt/venv")}
    final_runs = " ".join(v[0] for cmd, _, v in final if cmd == "RUN")
    assert "apt-get" not in final_runs and "gcc" not in final_runs
    assert "n.active()" in final_runs                      # the image is not built if they do not load


def test_build_contexts_send_what_the_dockerfiles_copy():
    """Each COPY source is in the build context and not excluded by the Dockerfile's
    .dockerignore (BuildKit reads <Dockerfile>.dockerignore beside it)."""
    for path in DOCKERFILES:
        context = REPO if path.parent == COMPOSE_DIR or "freeradius" in str(path) else path.parent
        ignore = path.with_name(path.name + ".dockerignore")
        rules = [line.strip() for line in ignore.read_text().splitlines()
                 if line.strip() and not line.startswith("#")] if ignore.exists() else []
        for command in dockerfile_commands(path):
            cmd, value = command.cmd.upper(), command.value
            if cmd != "COPY" or any(f.startswith("--from=") for f in command.flags):
                continue                      # from another stage, not from the context
            for source in (s.rstrip("/") for s in value[:-1]):
                assert (context / source).exists(), f"{path}: {source} not in {context}"
                assert _sent(source, rules), f"{path}: {source} is excluded by {ignore.name}"


def _sent(source: str, rules: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins ("!" re-includes)."""
    sent = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(source, pattern) or source.startswith(pattern + "/"):
            sent = negated
    return sent


def test_every_data_file_the_programs_read_is_installed():
    """Files beside the code (the ClickHouse schema, RADIUS dictionaries) are package data:
    a non-editable install (the image) would lack them otherwise."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for top in ("proxy", "cdr", "billing", "radius", "api"):
        for file in (REPO / top).rglob("*"):
            if file.is_dir() or file.suffix in (".py", ".pyc", ".md") or "__pycache__" in file.parts:
                continue
            rel = file.relative_to(REPO)
            listed = False
            for package, patterns in data.items():
                root = Path(*package.split("."))
                if rel.is_relative_to(root):
                    inside = str(rel.relative_to(root))
                    listed |= any(fnmatch.fnmatch(inside, pattern) for pattern in patterns)
            assert listed, f"{rel} is not package data in pyproject.toml"
