#!/usr/bin/env bash
# sipledger quick start on a fresh Debian machine.
#   ./quickstart.sh up     install what is missing, then run the product (Ctrl-C stops it)
#   ./quickstart.sh test   install what is missing, then run the whole test suite, and
#                          the date-sensitive tests (marker `clock`) again a year ahead
# Installs: Debian packages (SIPp, FreeRADIUS and a ClickHouse server for the
# tests, baresip, sipsak and Kamailio for the interop suite, Kamailio for the speed anchor,
# rtpengine for the media relay, iptables for the NAT tests, headless Chromium for the
# web panel's browser tests), a virtualenv at .venv in this
# checkout, and the project into it.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
MODE="${1:-up}"; shift || true

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip-core)
command -v sipsak >/dev/null 2>&1 || need_apt+=(sipsak)
command -v rtpengine >/dev/null 2>&1 || [ -x /usr/bin/rtpengine ] || need_apt+=(rtpengine-daemon)
command -v freeradius >/dev/null 2>&1 || [ -x /usr/sbin/freeradius ] || need_apt+=(freeradius)
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server)
command -v pidstat >/dev/null 2>&1 || need_apt+=(sysstat)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need_apt+=(iptables)   # the NAT tests (tests/nat)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v sngrep >/dev/null 2>&1 || need_apt+=(sngrep)     # decodes the HEP v3 the SIP trace sends (tests/integration/test_trace_hep.py)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql)     # the shared stores of the scale-out tests
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)             # the web panel's browser tests (tests/panel)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)   # ... driven by Selenium
# a C compiler and the Python headers: the proxy's hot modules are compiled with mypyc
# (scripts/build_native.py, proxy/native.py); without them the proxy runs them as pure Python
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
"${PYTHON:-python3}" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "==> installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.sipledger-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing sipledger into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
# the compiled proxy modules, rebuilt when a source changed (~1 min; a failure is
# reported and the proxy runs pure Python, which tests/unit/test_native.py flags)
.venv/bin/python scripts/build_native.py || true

case "$MODE" in
  up)
    exec .venv/bin/sipledger --data-dir "${SIPLEDGER_DATA_DIR:-$ROOT/data}" up "$@" ;;
  check)
    # static checks on the product packages: lint, types, the layer contracts
    .venv/bin/ruff check proxy cdr billing radius api
    .venv/bin/mypy
    .venv/bin/lint-imports --no-cache ;;
  test)
    # 0. the static checks ("check" above): a red check stops here;
    # 1. the whole suite (or what "$@" selects) on today's clock;
    # 2. its tests marked `clock` again with the project's clock a year ahead
    #    (SIPLEDGER_CLOCK_SHIFT_S, proxy/infra/clock.py; child processes inherit
    #    it): no test may depend on today's date;
    # 3. the unit tests as pure Python (below).
    # Each run lists its 15 slowest tests: the suite must stay under 15 minutes.
    # Both runs use SIPLEDGER_TEST_PROCESSES (default 2) pytest-xdist processes:
    # most integration tests wait on timers and brokers, so two run side by side;
    # tests/conftest.py keeps each file (and each folder sharing one `up`) in
    # one process.  SIPLEDGER_TEST_PROCESSES=0 runs everything in this process.
    # Exit status: non-zero if any run failed.  Exit code 5 (no tests
    # collected) fails the first run; in the second it only means the
    # selection held no `clock` test.
    echo "==> static checks: ruff, mypy, import-linter"
    "$0" check
    shift_s="${SIPLEDGER_TEST_CLOCK_SHIFT_S:-31536000}"
    parallel=(-n "${SIPLEDGER_TEST_PROCESSES:-2}")
    set +e
    env -u SIPLEDGER_CLOCK_SHIFT_S .venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" --durations=15 "$@"
    main=$?
    echo "==> the tests marked clock again, SIPLEDGER_CLOCK_SHIFT_S=$shift_s"
    SIPLEDGER_CLOCK_SHIFT_S="$shift_s" .venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" --durations=15 "$@" -m clock
    shifted=$?
    # 3. (whole runs only) the unit tests again with the proxy's hot modules as pure
    #    Python (SIPLEDGER_NATIVE=0, proxy/native.py): the fallback must behave as the
    #    compiled build does
    pure=0
    if [ $# -eq 0 ]; then
      echo "==> the unit tests again as pure Python, SIPLEDGER_NATIVE=0"
      SIPLEDGER_NATIVE=0 .venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" tests/unit
      pure=$?
    fi
    set -e
    if [ "$shifted" -eq 5 ]; then shifted=0; fi
    echo "==> whole suite: exit $main; clock tests shifted by ${shift_s}s: exit $shifted; pure Python: exit $pure"
    if [ "$main" -ne 0 ] || [ "$shifted" -ne 0 ] || [ "$pure" -ne 0 ]; then exit 1; fi ;;
  setup)
    echo "==> ready: .venv/bin/sipledger --help" ;;
  *)
    echo "usage: $0 up|test|check|setup" >&2; exit 2 ;;
esac
