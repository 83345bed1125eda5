#!/usr/bin/env bash
# bench/regress.sh — the speed regression run: a short run of every benchmark
# that matters for speed, one table of figures at the end.
#
#   bench/regress.sh                  # everything (~4-5 min on 2 cores)
#   ONLY="credit radius" bench/regress.sh
#
# Runs (each its own components on loopback, each short; the figures are
# smoke-level: compare them with the same script's earlier output, and
# with Kamailio's in the same run where there is one):
#   sip       bench/sip_rate.sh SIP_RATE SIP_CALLS, Kamailio then sipledger (ratio column)
#   sipcredit bench/sip_rate.sh's credit run (digest auth + credit control, the default
#             script): SIPCREDIT_RATE x SIPCREDIT_CALLS, SIPCREDIT_USERS subscribers
#   outbox    bench/outbox_publish.py --events OUTBOX_EVENTS
#   pipeline  bench/cdr_pipeline.py --calls PIPE_CALLS --rate PIPE_RATE
#   store     bench/cdr_store.py --rows STORE_ROWS --repeat 5 (chdb)
#   credit    bench/credit_control.py --rate CREDIT_RATE --seconds 5
#   radius    bench/radius_rate.py --skip sync (the queue alone, and the whole worker)
#
# Environment [defaults]: ONLY [all of the above], SIP_RATE [500] SIP_CALLS
# [7500], SIPCREDIT_RATE [200] SIPCREDIT_CALLS [2000] SIPCREDIT_USERS [200],
# OUTBOX_EVENTS [100000], PIPE_CALLS [8000] PIPE_RATE [2000], STORE_ROWS
# [200000], CREDIT_RATE [5000], RADIUS_CALLS [5000], RADIUS_TRANSPORT [udp]
# (or tcp: RFC 6613), RUN_TIMEOUT
# [180] (seconds a run may take before it is killed and counted as failed),
# BENCH_DIR [${TMPDIR:-/tmp}/regress/<time>] (each run's full output).
# The SIP ports are picked free at start (PROXY_PORT, UAS_PORT, UAC_PORT
# override them); SIP_LOAD (sip_rate.sh's harness) is found in ../shared or
# ../../shared when not set.
#
# Exit status: 0 when every run finished and passed, 1 when one failed (its
# row says FAIL and names its log), 2 on a usage error.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || { echo "no $PY: run ./quickstart.sh setup first" >&2; exit 2; }
ONLY="${ONLY:-sip sipcredit outbox pipeline store credit radius}"
for r in $ONLY; do
  case "$r" in sip|sipcredit|outbox|pipeline|store|credit|radius) ;; *) echo "unknown run '$r' in ONLY" >&2; exit 2;; esac
done
SIP_RATE="${SIP_RATE:-500}" SIP_CALLS="${SIP_CALLS:-7500}"
SIPCREDIT_RATE="${SIPCREDIT_RATE:-200}" SIPCREDIT_CALLS="${SIPCREDIT_CALLS:-2000}" SIPCREDIT_USERS="${SIPCREDIT_USERS:-200}"
OUTBOX_EVENTS="${OUTBOX_EVENTS:-100000}"
PIPE_CALLS="${PIPE_CALLS:-8000}" PIPE_RATE="${PIPE_RATE:-2000}"
STORE_ROWS="${STORE_ROWS:-200000}"
CREDIT_RATE="${CREDIT_RATE:-5000}"
RADIUS_CALLS="${RADIUS_CALLS:-5000}"
RADIUS_TRANSPORT="${RADIUS_TRANSPORT:-udp}"
RUN_TIMEOUT="${RUN_TIMEOUT:-180}"
BENCH_DIR="${BENCH_DIR:-${TMPDIR:-/tmp}/regress/$(date +%Y%m%d-%H%M%S)-$$}"
mkdir -p "$BENCH_DIR"

# three free loopback UDP ports for the SIP run (the defaults 5060/5070/5080 may be taken)
if [ -z "${PROXY_PORT:-}" ]; then
  read -r PROXY_PORT UAS_PORT UAC_PORT < <("$PY" - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*(s.getsockname()[1] for s in socks))
EOF
)
fi
export PROXY_PORT UAS_PORT UAC_PORT
# sip_rate.sh looks for the shared SIPp harness beside the checkout; a git worktree sits a level deeper
if [ -z "${SIP_LOAD:-}" ]; then
  for d in "$REPO/../shared" "$REPO/../../shared"; do
    [ -x "$d/bench/sip/sip_load.sh" ] && { SIP_LOAD="$(cd "$d" && pwd)/bench/sip/sip_load.sh"; break; }
  done
fi
[ -n "${SIP_LOAD:-}" ] && export SIP_LOAD

STATUS=0
run() {   # run NAME CMD...: output to $BENCH_DIR/NAME.log, exit status to NAME.rc
  local name="$1"; shift
  echo "=== $name: $* ($(uptime | sed 's/.*load/load/'))"
  local t0=$SECONDS
  timeout --kill-after=10 "$RUN_TIMEOUT" "$@" >"$BENCH_DIR/$name.log" 2>&1
  local rc=$?
  echo "$rc" >"$BENCH_DIR/$name.rc"
  echo "$(uptime | sed 's/.*load average: //')" >"$BENCH_DIR/$name.load"
  echo "    exit $rc after $((SECONDS - t0)) s ($BENCH_DIR/$name.log)"
  [ "$rc" = 0 ] || STATUS=1
}

cd "$REPO" || exit 2
for r in $ONLY; do
  case "$r" in
    sip)      run sip env BENCH_DIR="$BENCH_DIR/sip" RUNS="kamailio sipledger" \
                  "$HERE/sip_rate.sh" "$SIP_RATE" "$SIP_CALLS" ;;
    sipcredit) run sipcredit env BENCH_DIR="$BENCH_DIR/sipcredit" RUNS=credit CREDIT_USERS="$SIPCREDIT_USERS" \
                  "$HERE/sip_rate.sh" "$SIPCREDIT_RATE" "$SIPCREDIT_CALLS" ;;
    outbox)   run outbox "$PY" bench/outbox_publish.py --events "$OUTBOX_EVENTS" ;;
    pipeline) run pipeline "$PY" bench/cdr_pipeline.py --calls "$PIPE_CALLS" --rate "$PIPE_RATE" --timeout 60 ;;
    store)    run store "$PY" bench/cdr_store.py --rows "$STORE_ROWS" --repeat 5 ;;
    credit)   run credit "$PY" bench/credit_control.py --rate "$CREDIT_RATE" --seconds 5 --closed 3000 \
                  --accounts 100 --calls 50 ;;
    radius)   run radius "$PY" bench/radius_rate.py --skip sync --records 6000 --in-flight 32 \
                  --calls "$RADIUS_CALLS" --transport "$RADIUS_TRANSPORT" ;;
  esac
done

"$PY" - "$BENCH_DIR" $ONLY <<'EOF'
"""One table from the runs' logs (their RESULT lines and summary lines)."""
import json
import re
import sys
from pathlib import Path

out, runs = Path(sys.argv[1]), sys.argv[2:]
rows = []          # (run, figure, value, ratio to Kamailio, status)


def log(name):
    path = out / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def status(name):
    rc = (out / f"{name}.rc").read_text().strip() if (out / f"{name}.rc").exists() else "?"
    return "ok" if rc == "0" else f"FAIL (exit {rc}, {out / (name + '.log')})"


def result(text):
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else {}


def load(name):
    path = out / f"{name}.load"
    return path.read_text().strip() if path.exists() else ""


for name in runs:
    text, st = log(name), status(name)
    try:
        if name == "sip":
            table = {}
            for line in text.splitlines():
                m = re.match(r"(kamailio|sipledger)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
                if m:
                    table[m[1]] = m.groups()[1:]
            for proxy in ("kamailio", "sipledger"):
                if proxy in table:
                    res, cps, ok, failed, cpu = table[proxy]
                    rows.append((name, f"{proxy} {res}: calls/s achieved", cps, "", st))
                    rows.append((name, f"{proxy}: failed calls", failed, "", st))
            if "kamailio" in table and "sipledger" in table:
                k, s = table["kamailio"][4], table["sipledger"][4]
                ratio = f"{float(s) / float(k):.2f}x" if re.match(r"^[0-9.]+$", k + s) and float(k) else "n/a"
                rows.append((name, "CPU ms per call (sipledger, Kamailio)", f"{s} / {k}", ratio, st))
            if not table:
                rows.append((name, "no result table", "", "", st))
        elif name == "sipcredit":
            m = re.search(r"^credit\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$", text, re.M)
            if m:
                res, cps, ok, failed, cpu, rtt, detail = m.groups()
                rows.append((name, f"credit {res}: calls/s achieved; failed", f"{cps}; {failed}", "", st))
                rows.append((name, "CPU ms per call (whole tree)", cpu, "", st))
                rows.append((name, "CPU ms per call by part",
                             re.sub(r"^ms/call | over [\d.]+s$", "", detail.strip()), "", st))
                rows.append((name, "INVITE->200 p50 / p99 ms", rtt.replace("/", " / "), "", st))
            else:
                rows.append((name, "no result table", "", "", st))
            m = re.search(r"^credit check: calls (\d+); billing authorized (\d+)", text, re.M)
            if m:
                rows.append((name, "calls; authorized by billing", f"{m[1]}; {m[2]}", "", st))
        elif name == "outbox":
            m = re.search(r"([\d,]+) events/s sustained; ([\d.]+) µs CPU per event", text)
            rows.append((name, "events/s sustained", m[1] if m else "n/a", "", st))
            rows.append((name, "µs CPU per event", m[2] if m else "n/a", "", st))
        elif name == "pipeline":
            r = result(text)
            rows.append((name, "calls/s through the processor", r.get("calls_per_s", "n/a"), "", st))
            for key in ("last_event_to_row_p50_ms", "last_event_to_row_p99_ms"):
                if key in r:
                    rows.append((name, key.replace("_", " "), r[key], "", st))
        elif name == "store":
            r = result(text)
            rows.append((name, "insert rows/s", r.get("rows_per_s", r.get("insert_rows_per_s", "n/a")), "", st))
            queries = r.get("queries", {})
            if queries:
                worst = max(queries.items(), key=lambda kv: kv[1].get("p99_ms", 0))
                rows.append((name, f"slowest query p99 ms ({worst[0]})", worst[1].get("p99_ms"), "", st))
        elif name == "credit":
            for label, pattern in (("closed loop", r"closed loop.*?p50=([\d.]+).*?p99=([\d.]+)"),
                                   ("open loop", r"open loop.*?p50=([\d.]+).*?p99=([\d.]+)")):
                m = re.search(pattern, text)
                rows.append((name, f"authorization {label} p50 / p99 ms", f"{m[1]} / {m[2]}" if m else "n/a",
                             "", st))
            m = re.search(r"answered (\d+), lost (\d+).*?service CPU ([\d.]+) ms", text)
            if m:
                rows.append((name, "answered / lost; service CPU ms per authorization",
                             f"{m[1]} / {m[2]}; {m[3]}", "", st))
            m = re.search(r"within \+1 s: (\d+)/(\d+)", text)
            if m:
                rows.append((name, "teardowns within +1 s", f"{m[1]}/{m[2]}", "", st))
        elif name == "radius":
            r = result(text)
            over = f", {r['transport']}" if r.get("transport", "udp") != "udp" else ""
            for n, q in r.get("queue", {}).items():
                rows.append((name, f"queue -> FreeRADIUS req/s ({n} in flight{over})", q.get("req_per_s"), "", st))
            p = r.get("pipeline", {})
            if p:
                rows.append((name, f"worker: answered calls/s (2 requests each{over})",
                             round(p["requests_per_s"] / 2), "", st))
                rows.append((name, "worker / FreeRADIUS CPU ms per call",
                             f"{p.get('worker_cpu_ms_per_call')} / {p.get('freeradius_cpu_ms_per_call')}", "", st))
        rows.append((name, "load average after the run", load(name), "", st))
    except Exception as exc:                          # a run whose output changed shape: say so
        rows.append((name, f"unparsed output ({exc!r})", "", "", st))

widths = [max(len(str(row[i])) for row in rows + [("run", "figure", "value", "vs Kamailio", "status")])
          for i in range(5)]
print()
print(f"=== regression run ({out})")
for row in [("run", "figure", "value", "vs Kamailio", "status")] + rows:
    print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
EOF
exit $STATUS
