"""The FreeRADIUS image's configuration, checked by FreeRADIUS itself.

compose/freeradius/Dockerfile copies a kit (the project's dictionary, clients.conf,
prepare.sh) and runs prepare.sh on Debian bookworm's stock /usr/share/freeradius
and /etc/freeradius/3.0.  This machine has the same Debian FreeRADIUS (3.2.1):
the test does the same on copies of them, as the Dockerfile says, and runs
``freeradius -C`` (load and check every module, the dictionaries, the clients)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.harness.compose import COMPOSE_DIR, REPO, dockerfile_commands
from tests.harness.freeradius import FREERADIUS, STOCK_DICT_DIR, freeradius_available

pytestmark = pytest.mark.skipif(not freeradius_available(), reason="freeradius is not installed")

DOCKERFILE = COMPOSE_DIR / "freeradius" / "Dockerfile"
STOCK_RADDB = Path("/etc/freeradius/3.0")


def _image_steps() -> tuple[list[Path], Path, list[str]]:
    """(kit files, where the image puts them, prepare.sh's arguments) as the Dockerfile says."""
    commands = [(c.cmd.upper(), list(c.value)) for c in dockerfile_commands(DOCKERFILE)]
    copy = next(v for cmd, v in commands if cmd == "COPY" and any(s.endswith("prepare.sh") for s in v))
    kit_dir = Path(copy[-1])
    run = next(v[0] for cmd, v in commands if cmd == "RUN" and "prepare.sh" in v[0])
    words = run.split("&&")[0].split()
    assert words[:2] == ["sh", str(kit_dir / "prepare.sh")], words
    return [REPO / source for source in copy[:-1]], kit_dir, words[2:]


@pytest.fixture
def prepared():
    """Copies of Debian's FreeRADIUS files (owners and modes kept: freeradius -C reads them
    as freerad) with prepare.sh applied; in a directory freerad may enter."""
    kit, _, arguments = _image_steps()
    assert arguments == [str(STOCK_DICT_DIR), str(STOCK_RADDB)]      # the stock paths the copies stand for
    root = Path(tempfile.mkdtemp(prefix="sipledger-freeradius-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        dict_dir, raddb = root / "dict", root / "raddb"
        subprocess.run(["cp", "-a", str(STOCK_DICT_DIR), str(dict_dir)], check=True)
        subprocess.run(["cp", "-a", str(STOCK_RADDB), str(raddb)], check=True)
        (root / "kit").mkdir()
        for file in kit:
            shutil.copy(file, root / "kit" / file.name)
        subprocess.run(["sh", str(root / "kit" / "prepare.sh"), str(dict_dir), str(raddb)], check=True, timeout=30)
        yield dict_dir, raddb
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check(dict_dir: Path, raddb: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([FREERADIUS, "-C", "-X", "-d", str(raddb), "-D", str(dict_dir)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_freeradius_accepts_the_image_configuration(prepared):
    dict_dir, raddb = prepared
    env = {k: v for k, v in os.environ.items() if k != "RADIUS_SECRET"}
    result = _check(dict_dir, raddb, {**env, "RADIUS_SECRET": "s3cret"})
    assert result.returncode == 0 and "Configuration appears to be OK" in result.stdout, \
        (result.stdout + result.stderr)[-3000:]
    # the Sip-* names are the project's (else "Duplicate attribute name Sip-Method")
    assert "$INCLUDE dictionary.sipledger" in (dict_dir / "dictionary").read_text().splitlines()[-1]
    # clients.conf takes its secret from the environment: without it FreeRADIUS refuses to start
    missing = _check(dict_dir, raddb, env)
    assert missing.returncode != 0
    assert "secret must be at least 1 character long" in missing.stdout + missing.stderr
