#!/usr/bin/env bash
# bench/sip_rate.sh RATE CALLS
#
# The same SIPp load (INVITE/200/ACK/BYE/200 honouring Record-Route, through a
# proxy on loopback UDP) run twice by the shared harness sip_load.sh: first
# through Kamailio (the reference), then through sipledger, and the two
# compared: achieved call rate, PASS/FAIL, proxy CPU per call, sipledger/Kamailio.
#
#   bench/sip_rate.sh 1000 15000
#   PROXY_PORT=25060 UAS_PORT=25070 UAC_PORT=25080 bench/sip_rate.sh 2000 30000
#   RUNS=sipledger bench/sip_rate.sh 500 5000          # skip the Kamailio run
#   MEDIA=1 bench/sip_rate.sh 500 7500                 # both with media relayed by rtpengine
#   RUNS="sipledger credit" bench/sip_rate.sh 200 6000 # plain, then digest auth + credit control
#
# The "credit" run (issue 19): the product path.  sipledger with
# bench/sip_rate_credit.toml -- nobody trusted, billing and [authorization]
# on (the defaults), the default routing script -- and a UAC that
# authenticates (bench/uac_auth.xml: INVITE -> 407 -> ACK, INVITE with
# Proxy-Authorization -> 100/180/200 -> ACK -> BYE -> 200), each call as the
# next of CREDIT_USERS subscribers (SIPp -inf, sequential), so credit control
# authorizes every call of many accounts.  Before `up` starts, the data dir
# gets the domain, the subscribers, a rate plan for CREDIT_NUMBER's prefix
# and one prepaid account each (bench/sip_credit_setup.py).  The number is no
# subscriber, so the default script sends it to_pstn(): no gateway route is
# provisioned, so it leaves by static_route, to the same SIPp UAS.  After the
# load, the run checks every call was authorized: billing's "authorized"
# count (its BILLING STATS line) and the workers' auth counters (`sipledger
# stats`) against the successful calls.
# sip_load.sh takes its UAC scenario from its own directory (uac_rr.xml beside
# it), so the credit run hands it a directory of links (sip_load.sh itself,
# uac_rr.xml -> bench/uac_auth.xml, uas_rr.xml unchanged) rather than a copy.
#
# MEDIA=1 (issue 14): the same calls (SIPp's INVITE and 200 OK both carry SDP)
# with every call's media anchored in rtpengine: Kamailio gets
# bench/kamailio_rtpengine.cfg (rtpengine_offer / _answer / _delete) and an
# rtpengine started here; sipledger gets `[media] enabled = true, policy =
# "always"` appended to its config and starts its own rtpengine (`launch`).
# Both rtpengines run alike: userspace (--table=-1), loopback, ports
# RTPE_PORT_MIN..RTPE_PORT_MAX, delete-delay 0 (ports free at the BYE).  SIPp
# sends no RTP: this measures the signalling plus the ng round trips, which
# is what limits calls/s.  rtpengine's CPU is reported apart.
#
# Environment (defaults in brackets):
#   SIP_LOAD       the harness [<repo>/../shared/bench/sip/sip_load.sh, or
#                  <repo>/../../shared/... from a git worktree]
#   PROXY_PORT     [5060]  UAS_PORT [5070]  UAC_PORT [5080]   (loopback only)
#   RUNS           which runs, in order ["kamailio sipledger"]; any of kamailio,
#                  sipledger, credit
#   SIPLEDGER_CMD  how to run the CLI [<repo>/.venv/bin/sipledger, or
#                  <repo>/.venv/bin/python -m api.cli when that is not installed]
#   SL_CONFIG      sipledger config [<repo>/bench/sip_rate.toml]; its
#                  static_route is pointed at UAS_PORT automatically
#   BENCH_DIR      where results go [${TMPDIR:-/tmp}/sip-rate/<time>]
#   MEDIA          [0] 1 = relay media through rtpengine (above)
#   SL_CREDIT_CONFIG  the credit run's config [<repo>/bench/sip_rate_credit.toml]
#   CREDIT_USERS   [1000] subscribers (and prepaid accounts) the calls cycle through
#   CREDIT_NUMBER  [4930123456] the dialled number (its first 2 digits are rated)
#   CREDIT_DOMAIN  [bench.test] the subscribers' served domain
#   CREDIT_CDR     [0] 1 = the credit run with the CDR pipeline and the API (its sink)
#                  on too (on a free API port); `up` then runs CDR_SETTLE_SECS [15]
#                  after the load, so the check can count the CDRs and their accounts
#   RTPENGINE      [/usr/bin/rtpengine]  RTPE_NG_PORT [22223]
#   RTPE_PORT_MIN  [16384]  RTPE_PORT_MAX [32767]
#   UP_READY_SECS  [120] how long `up` may take to print READY
#   HOLD_MS, WAIT_IDLE, KAM_*, SIPP_*, MAX_SECS ... are passed to sip_load.sh.
#
# CPU: sip_load.sh counts the proxy PID and its direct children.  That is all
# of Kamailio, but sipledger's proxy workers are grandchildren of `sipledger
# up` (up -> proxy supervisor -> workers), so for sipledger this script adds
# its own measurement of the whole process tree over the same window (the
# moments sip_load.sh snapshots CPU before and after the UAC run), split into
# workers / billing / cdr / api / broker / supervisors (ms per call each in
# the table's detail column).
#
# sipledger is started here, and loaded only once `up` printed READY (its SIP
# port is bound seconds before its workers and rtpengine are ready; calls sent
# in that gap fail); sip_load.sh then runs with PROXY=none.
#
# Exit status: 0 both runs PASS, 1 a run FAILED, 2 usage or setup error.
# Everything started here is stopped by PID (sip_load.sh stops the Kamailio it
# starts; `up` gets SIGINT, leftovers of its tree are killed by recorded PID).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
RATE="${1:?usage: $0 RATE CALLS}"
CALLS="${2:?usage: $0 RATE CALLS}"
[[ "$RATE" =~ ^[0-9]+$ && "$CALLS" =~ ^[0-9]+$ && "$RATE" -gt 0 && "$CALLS" -gt 0 ]] \
  || { echo "RATE and CALLS must be positive integers" >&2; exit 2; }

if [ -z "${SIP_LOAD:-}" ]; then   # beside the checkout; a git worktree sits a level deeper
  SIP_LOAD="$HERE/../../shared/bench/sip/sip_load.sh"
  [ -x "$SIP_LOAD" ] || [ ! -x "$HERE/../../../shared/bench/sip/sip_load.sh" ] || SIP_LOAD="$HERE/../../../shared/bench/sip/sip_load.sh"
fi
[ -x "$SIP_LOAD" ] || { echo "sip_load.sh not found or not executable: $SIP_LOAD (set SIP_LOAD)" >&2; exit 2; }
SIP_LOAD="$(cd "$(dirname "$SIP_LOAD")" && pwd)/$(basename "$SIP_LOAD")"
export PROXY_HOST=127.0.0.1
export PROXY_PORT="${PROXY_PORT:-5060}" UAS_PORT="${UAS_PORT:-5070}" UAC_PORT="${UAC_PORT:-5080}"
RUNS="${RUNS:-kamailio sipledger}"
SL_CONFIG="${SL_CONFIG:-$REPO/bench/sip_rate.toml}"
SL_CREDIT_CONFIG="${SL_CREDIT_CONFIG:-$REPO/bench/sip_rate_credit.toml}"
CREDIT_USERS="${CREDIT_USERS:-1000}" CREDIT_NUMBER="${CREDIT_NUMBER:-4930123456}" CREDIT_CDR="${CREDIT_CDR:-0}"
CREDIT_DOMAIN="${CREDIT_DOMAIN:-bench.test}"
BENCH_DIR="${BENCH_DIR:-${TMPDIR:-/tmp}/sip-rate/$(date +%Y%m%d-%H%M%S)-$$}"
PY="$(command -v python3 || echo "$REPO/.venv/bin/python")"
if [ -z "${SIPLEDGER_CMD:-}" ]; then
  if [ -x "$REPO/.venv/bin/sipledger" ]; then SIPLEDGER_CMD="$REPO/.venv/bin/sipledger"
  else SIPLEDGER_CMD="$REPO/.venv/bin/python -m api.cli"; fi
fi
MEDIA="${MEDIA:-0}"
RTPENGINE="${RTPENGINE:-/usr/bin/rtpengine}"
RTPE_NG_PORT="${RTPE_NG_PORT:-22223}"
RTPE_PORT_MIN="${RTPE_PORT_MIN:-16384}" RTPE_PORT_MAX="${RTPE_PORT_MAX:-32767}"
if [ "$MEDIA" = 1 ]; then
  [ -x "$RTPENGINE" ] || { echo "MEDIA=1 needs rtpengine (Debian rtpengine-daemon; ./quickstart.sh installs it)" >&2; exit 2; }
  [ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/rtpengine.so ] || [[ " $RUNS " != *" kamailio "* ]] \
    || { echo "MEDIA=1 needs Kamailio's rtpengine module (rtpengine.so) for the Kamailio run" >&2; exit 2; }
fi
mkdir -p "$BENCH_DIR" || exit 2

SAMPLER_PID=""
RTPE_PID=""
UP_PID=""
UP_READY_SECS="${UP_READY_SECS:-120}"
TREE_PIDS=""      # the run's "pid starttime" of every process seen in its tree (run_one sets it)
cleanup() {
  [ -n "$SAMPLER_PID" ] && kill -0 "$SAMPLER_PID" 2>/dev/null && kill "$SAMPLER_PID" 2>/dev/null
  stop_rtpengine
  stop_up
  kill_leftovers
  wait 2>/dev/null
}
kill_leftovers() { # only PIDs recorded as part of the sipledger tree, start time checked
  [ -s "$TREE_PIDS" ] || return 0
  local sig pid st alive
  for sig in TERM KILL; do
    alive=0
    while read -r pid st; do
      [ "$(starttime "$pid")" = "$st" ] || continue
      alive=1; kill -"$sig" "$pid" 2>/dev/null
    done <"$TREE_PIDS"
    [ $alive = 0 ] && return 0
    [ $sig = TERM ] && sleep 3
  done
  echo "warning: killed leftover sipledger processes (see $TREE_PIDS)" >&2
}
stop_up() { # SIGINT: `up` stops what it started; then its leftovers by recorded PID
  [ -n "$UP_PID" ] || return 0
  kill -INT "$UP_PID" 2>/dev/null
  for _ in $(seq 300); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$UP_PID" 2>/dev/null
  wait "$UP_PID" 2>/dev/null
  UP_PID=""
}
starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }
cputicks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12+$13}'; }

# ---- the Kamailio run's rtpengine (MEDIA=1) ------------------------------------
start_rtpengine() { # dir
  ss -Hlun "sport = :$RTPE_NG_PORT" 2>/dev/null | grep -q . \
    && { echo "UDP port $RTPE_NG_PORT (RTPE_NG_PORT) already in use" >&2; return 2; }
  "$RTPENGINE" --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng="127.0.0.1:$RTPE_NG_PORT" \
    --port-min="$RTPE_PORT_MIN" --port-max="$RTPE_PORT_MAX" --delete-delay=0 --foreground --log-stderr \
    --log-level=4 --pidfile="$1/rtpengine.pid" >"$1/rtpengine.log" 2>&1 &
  RTPE_PID=$!
  local _
  for _ in $(seq 100); do
    ss -Hlun "sport = :$RTPE_NG_PORT" 2>/dev/null | grep -q . && return 0
    kill -0 "$RTPE_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "rtpengine did not listen on 127.0.0.1:$RTPE_NG_PORT:" >&2; tail -5 "$1/rtpengine.log" >&2
  return 2
}
rtpe_sessions() { # ng port -> sessions rtpengine managed since it started ("statistics")
  "$PY" - "$1" <<'PYEOF'
import re, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
try:
    s.sendto(b"s1 d7:command10:statisticse", ("127.0.0.1", int(sys.argv[1])))
    m = re.search(rb"15:managedsessionsi(\d+)e", s.recv(65535))
    print(m.group(1).decode() if m else "n/a")
except OSError:
    print("n/a")
PYEOF
}
stop_rtpengine() {
  [ -n "$RTPE_PID" ] || return 0
  kill -TERM "$RTPE_PID" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$RTPE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$RTPE_PID" 2>/dev/null
  wait "$RTPE_PID" 2>/dev/null
  RTPE_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- sipledger's CPU over sip_load.sh's measuring window --------------------
# Waits for the pid file written by the wrapper below, then snapshots the CPU
# ticks of the whole tree when sip_load.sh creates all_ticks0.txt (just before
# the UAC starts) and all_ticks1.txt (just after it ends).
write_sampler() {
cat >"$1" <<'PYEOF'
import os, sys, time
pidfile, outdir, result, treefile, limit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
HZ = os.sysconf("SC_CLK_TCK")
end = time.monotonic() + limit

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        return int(rest[11]) + int(rest[12]), rest[19], cmd
    except (OSError, IndexError, ValueError):
        return None

def tree(root):
    out, todo = [root], [root]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for k in kids:
                if k not in out:
                    out.append(k); todo.append(k)
    return out

seen = {}
def record(root):
    snap = {}
    for p in tree(root):
        s = stat(p)
        if s is None:
            continue
        snap[p] = s
        if p not in seen:
            seen[p] = s[1]
            with open(treefile, "a") as f:
                f.write(f"{p} {s[1]}\n")
    return snap

def kind(cmd):
    if "tansu" in cmd: return "broker"
    if "rtpengine" in cmd: return "rtpengine"
    if " proxy worker" in cmd: return "workers"
    for service in ("billing", "cdr", "api.serve"):      # `up`'s children: python -m <service>
        if f" -m {service} " in cmd: return service.split(".")[0]
    return "supervisors"

root = None
while time.monotonic() < end and root is None:
    try:
        root = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        time.sleep(0.02)
if root is None:
    sys.exit(1)
s0 = s1 = None
t0 = t1 = None
walked = float("-inf")
# the markers are looked for every 10 ms, the tree walked only at them and every
# 0.5 s (to record its PIDs): walking it every 10 ms cost 7-8 % of a core beside
# the credit run's tree (billing's threads), on the cores the measured processes share
while time.monotonic() < end:
    now = time.monotonic()
    start = s0 is None and os.path.exists(os.path.join(outdir, "all_ticks0.txt"))
    stop = s0 is not None and os.path.exists(os.path.join(outdir, "all_ticks1.txt"))
    if start or stop or now - walked >= 0.5:
        snap, walked = record(root), now
        if start:
            s0, t0 = snap, now
        elif stop:
            s1, t1 = snap, now
            break
    if not os.path.exists(f"/proc/{root}"):
        break
    time.sleep(0.01)
if s0 is None or s1 is None:
    sys.exit(1)
by = {"workers": 0, "billing": 0, "cdr": 0, "api": 0, "broker": 0, "supervisors": 0, "rtpengine": 0}
for p, (ticks, st, cmd) in s1.items():
    base = s0.get(p)
    d = ticks - (base[0] if base and base[1] == st else 0)
    by[kind(cmd)] += max(d, 0)
total = sum(by.values())
with open(result, "w") as f:
    f.write(f"total_s={total / HZ:.3f} window_s={t1 - t0:.3f} "
            + " ".join(f"{k}_s={v / HZ:.3f}" for k, v in by.items())
            + f" pids={len(s1)} sampler_s={time.process_time():.3f}\n")
PYEOF
}

# ---- the credit run's data dir and harness --------------------------------------
free_tcp_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
setup_credit() { # dir data cfg: subscribers, accounts, rates; SIPp's user list; the harness links
  local dir=$1 data=$2 cfg=$3 h="$1/harness"
  grep -q '\$HERE/uac_rr.xml' "$SIP_LOAD" \
    || { echo "$SIP_LOAD no longer reads uac_rr.xml beside itself: the credit run cannot hand it bench/uac_auth.xml" >&2; return 2; }
  (cd "$REPO" && "$REPO/.venv/bin/python" "$HERE/sip_credit_setup.py" "$data" "$cfg" "$dir/users.csv" \
     --users "$CREDIT_USERS" --domain "$CREDIT_DOMAIN" --prefix "${CREDIT_NUMBER:0:2}") || return 2
  mkdir -p "$h"
  ln -sf "$SIP_LOAD" "$h/sip_load.sh"
  ln -sf "$HERE/uac_auth.xml" "$h/uac_rr.xml"
  ln -sf "$(dirname "$SIP_LOAD")/uas_rr.xml" "$h/uas_rr.xml"
}
credit_check() { # dir successful -> one line: authorizations, digest checks (and CDRs) against the calls
  (cd "$REPO" && "$REPO/.venv/bin/python" - "$1" "$2" <<'PYEOF'
import json, sys
from pathlib import Path
d, ok = Path(sys.argv[1]), int(sys.argv[2] or 0)
stats = {}
for line in (d / "stats.txt").read_text(errors="replace").splitlines() if (d / "stats.txt").exists() else []:
    parts = line.split()
    if len(parts) == 2:
        stats[parts[0]] = parts[1]
billing = {}
for log in sorted((d / "data" / "logs").glob("billing.log*")):
    for line in log.read_text(errors="replace").splitlines():
        if "BILLING STATS " in line:
            billing = json.loads(line.split("BILLING STATS ", 1)[1])
auth = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("auth:")}
refused = {k: v for k, v in billing.items() if k.startswith("refused_")}
cdrs = ""
if (d / "data" / "clickhouse").exists():           # CREDIT_CDR=1: what the CDR store got
    from proxy.infra import config
    from proxy.infra.clickhouse.backend import open_backend
    with open_backend(config.load(d / "sip_rate.toml").clickhouse, d / "data") as store:
        rows, with_account, accounts = store.query(
            "SELECT count(), countIf(account != ''), uniqExact(account) FROM cdr FINAL WHERE leg = 0")[0]
    cdrs = f"; CDRs {rows}, with the account {with_account}, {accounts} accounts"
print(f"calls {ok}; billing authorized {billing.get('authorized', 'n/a')}"
      + (f" refused {refused}" if refused else "")
      + (f", CDR legs {billing['cdr_legs']}, debits {billing.get('debits', 0)}" if "cdr_legs" in billing else "")
      + "; proxy auth " + (", ".join(f"{k} {v}" for k, v in sorted(auth.items())) or "n/a") + cdrs)
PYEOF
  )
}

# ---- parse a sip_load.sh report -----------------------------------------------
field() { # file regex-prefix -> first token after it
  grep -o -m1 -E "$2[^ ]*" "$1" | head -1 | sed -E "s/^$2//"
}
declare -A RES RATEA CPUCALL SUCC FAILN NOTE RTT CHECK

run_one() { # name
  local name=$1 out dir rc
  dir="$BENCH_DIR/$name"; mkdir -p "$dir"; out="$dir/report.txt"
  case "$name" in
    kamailio)
      echo "=== run 1: Kamailio (reference) rate=$RATE calls=$CALLS ports proxy=$PROXY_PORT uas=$UAS_PORT uac=$UAC_PORT media=$MEDIA"
      if [ "$MEDIA" = 1 ]; then
        start_rtpengine "$dir" || { RES[$name]="ERROR(setup)"; return 0; }
        local rt0; rt0=$(cputicks "$RTPE_PID")
        KAM_CFG="$HERE/kamailio_rtpengine.cfg" KAM_EXTRA="${KAM_EXTRA:-} -A RTPE_SOCK=\"udp:127.0.0.1:$RTPE_NG_PORT\"" \
          PROXY=kamailio OUTDIR="$dir/sip_load" "$SIP_LOAD" "$RATE" "$CALLS" 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        echo "rtpengine_s=$(awk -v t="$(( $(cputicks "$RTPE_PID") - rt0 ))" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.3f", t/hz}')" \
          "sessions=$(rtpe_sessions "$RTPE_NG_PORT")" >"$dir/rtpengine_cpu.txt"
        stop_rtpengine
      else
        PROXY=kamailio OUTDIR="$dir/sip_load" "$SIP_LOAD" "$RATE" "$CALLS" 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
      fi
      ;;
    sipledger|credit)
      local data="$dir/data" cfg="$dir/sip_rate.toml" wrapper="$dir/run_sipledger.sh" src="$SL_CONFIG"
      local harness="$SIP_LOAD" extra="${SIPP_EXTRA:-}" env_extra="" up_extra=""
      [ "$name" = credit ] && src="$SL_CREDIT_CONFIG"
      echo "=== run: $name rate=$RATE calls=$CALLS ports proxy=$PROXY_PORT uas=$UAS_PORT uac=$UAC_PORT config=$src"
      mkdir -p "$data"
      [ -f "$src" ] || { echo "config not found: $src" >&2; RES[$name]="ERROR(setup)"; return 0; }
      sed -E "s#^(static_route *= *\"sip:127\.0\.0\.1:)[0-9]+\"#\1$UAS_PORT\"#" "$src" >"$cfg"
      if [ "$name" = credit ]; then
        if [ "$CREDIT_CDR" = 1 ]; then
          env_extra="SIPLEDGER__CDR__ENABLED=true SIPLEDGER__API__ENABLED=true"
          up_extra="--api-port $(free_tcp_port)"
        fi
        setup_credit "$dir" "$data" "$cfg" || { RES[$name]="ERROR(setup)"; return 0; }
        harness="$dir/harness/sip_load.sh"
        # -auth_uri: the digest uri is the Request-URI (SIPp's default: the remote address)
        extra="$extra -inf $dir/users.csv -s $CREDIT_NUMBER -auth_uri $CREDIT_NUMBER@$CREDIT_DOMAIN"
      fi
      if [ "$MEDIA" = 1 ]; then
        printf '\n# MEDIA=1 (bench/sip_rate.sh): every call relayed by the rtpengine `up` starts\n[media]\nenabled = true\npolicy = "always"\nlaunch = true\ninterface = "127.0.0.1"\nport_min = %s\nport_max = %s\n' \
          "$RTPE_PORT_MIN" "$RTPE_PORT_MAX" >>"$cfg"
      fi
      # the wrapper keeps its PID through both execs: that PID is `sipledger up`
      cat >"$wrapper" <<EOF
#!/usr/bin/env bash
echo \$\$ >"$dir/sipledger.pid"
cd "$REPO"
export SIPLEDGER_DATA_DIR="$data" SIPLEDGER_CONFIG="$cfg" PYTHONPATH="$REPO\${PYTHONPATH:+:\$PYTHONPATH}" $env_extra
exec $SIPLEDGER_CMD up --sip-port $PROXY_PORT $up_extra
EOF
      chmod +x "$wrapper"
      write_sampler "$dir/sampler.py"
      TREE_PIDS="$dir/tree.pids"; : >"$TREE_PIDS"
      "$PY" "$dir/sampler.py" "$dir/sipledger.pid" "$dir/sip_load" "$dir/cpu_tree.txt" "$TREE_PIDS" \
        "$(( CALLS / RATE + 120 ))" &
      SAMPLER_PID=$!
      # start `up` here and load it once it printed READY: its SIP port is
      # bound seconds before its workers (and, MEDIA=1, its rtpengine) are ready,
      # and calls sent in that gap fail
      "$wrapper" >"$dir/up.out" 2>&1 &
      UP_PID=$!
      local deadline=$(( $(date +%s) + UP_READY_SECS ))
      until grep -q '^READY' "$dir/up.out" 2>/dev/null; do
        kill -0 "$UP_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.2
      done
      if grep -q '^READY' "$dir/up.out"; then
        echo "proxy: sipledger up pid $UP_PID: $(grep -m1 '^READY' "$dir/up.out")"
        # compiled or pure-Python signalling path (proxy/native.py), as worker 0 logged it
        echo "proxy: $(grep -h -m1 -o 'compiled proxy modules: .*' "$data"/logs/*.log 2>/dev/null | head -1)"
        # every process of the tree (the sampler has recorded them since `up` started), so
        # that sip_load.sh's "proxy" CPU is the tree's and its "other processes" are others
        local pids="" p st
        while read -r p st; do [ "$(starttime "$p")" = "$st" ] && pids+=" $p"; done <"$TREE_PIDS"
        PROXY=none PROXY_PIDS="${pids:-$UP_PID}" OUTDIR="$dir/sip_load" SIPP_EXTRA="$extra" "$harness" "$RATE" "$CALLS" 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        # CREDIT_CDR=1: the last calls' CDRs reach the store (and billing) before `up` stops
        [ "$name" = credit ] && [ "$CREDIT_CDR" = 1 ] && sleep "${CDR_SETTLE_SECS:-15}"
        # the workers' and billing's counters while `up` still runs (metrics files under run/)
        (cd "$REPO" && SIPLEDGER_DATA_DIR="$data" SIPLEDGER_CONFIG="$cfg" $SIPLEDGER_CMD stats >"$dir/stats.txt" 2>&1)
      else
        echo "sipledger up printed no READY within ${UP_READY_SECS}s:" | tee "$out"; tail -5 "$dir/up.out" | tee -a "$out"
        rc=2
      fi
      stop_up
      # the sampler ends at all_ticks1.txt or when `up` is gone; bound it anyway
      for _ in $(seq 50); do kill -0 "$SAMPLER_PID" 2>/dev/null || break; sleep 0.1; done
      kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=""
      kill_leftovers
      ;;
  esac
  # -- summarise
  RES[$name]=$(grep -q '^RESULT: PASS' "$out" && echo PASS || echo FAIL)
  [ "$rc" = 2 ] && RES[$name]="ERROR(setup)"
  SUCC[$name]=$(field "$out" 'successful=')
  FAILN[$name]=$(field "$out" 'failed=')
  local ach crate wall pcpu
  ach=$(field "$out" 'achieved_by_200OK_timestamps=')
  crate=$(field "$out" 'sipp_CallRate\(C\)=')
  wall=$(field "$out" 'wall=' | tr -d 's')
  [[ "$ach" =~ ^[0-9.]+$ ]] || ach="$crate"
  RATEA[$name]="${ach:-n/a}"
  RTT[$name]="$(field "$out" 'p50=')/$(field "$out" 'p99=')"
  local ok=${SUCC[$name]:-0}; [[ "$ok" =~ ^[0-9]+$ ]] || ok=0
  if [ "$name" = kamailio ]; then
    pcpu=$(grep -o -m1 -E 'proxy=[0-9]+%' "$out" | tr -dc '0-9')
    if [ -n "$pcpu" ] && [ "$ok" -gt 0 ] && [ -n "$wall" ]; then
      CPUCALL[$name]=$(awk -v p="$pcpu" -v w="$wall" -v n="$ok" 'BEGIN{printf "%.3f", p/100*w*1000/n}')
      NOTE[$name]="proxy ${pcpu}% of a core over ${wall}s"
      if [ -s "$dir/rtpengine_cpu.txt" ]; then   # MEDIA=1: the relay's share, apart
        local rts; rts=$(field "$dir/rtpengine_cpu.txt" 'rtpengine_s=')
        NOTE[$name]+="; rtpengine ${rts}s CPU = $(awk -v t="$rts" -v n="$ok" 'BEGIN{printf "%.3f", t*1000/n}') ms/call, $(field "$dir/rtpengine_cpu.txt" 'sessions=') sessions relayed"
      fi
    fi
  else
    if [ -s "$dir/cpu_tree.txt" ] && [ "$ok" -gt 0 ]; then
      local tot
      local rts
      tot=$(field "$dir/cpu_tree.txt" 'total_s=')
      rts=$(field "$dir/cpu_tree.txt" 'rtpengine_s=')
      # rtpengine apart, as for Kamailio: the proxy's own CPU per call
      CPUCALL[$name]=$(awk -v t="$tot" -v r="${rts:-0}" -v n="$ok" 'BEGIN{printf "%.3f", (t-r)*1000/n}')
      # each part's ms per call, the parts that ran (the seconds are in cpu_tree.txt)
      NOTE[$name]="ms/call $(awk -v n="$ok" '{for (i = 1; i <= NF; i++) if ($i ~ /_s=/ && $i !~ /^(total|window|rtpengine|sampler)_s=/) {
          split($i, kv, "_s="); if (kv[2] > 0) printf "%s %.3f ", kv[1], kv[2]*1000/n }}' "$dir/cpu_tree.txt")over $(field "$dir/cpu_tree.txt" 'window_s=')s"
      [ "$MEDIA" = 1 ] && NOTE[$name]+="; rtpengine $(awk -v t="${rts:-0}" -v n="$ok" 'BEGIN{printf "%.3f", t*1000/n}') ms/call"
    else
      NOTE[$name]="no whole-tree CPU sample (did sipledger start?)"
    fi
    [ "$name" = credit ] && CHECK[$name]="$(credit_check "$dir" "$ok")"
  fi
  return 0
}

for r in $RUNS; do
  case "$r" in kamailio|sipledger|credit) ;; *) echo "unknown run '$r' in RUNS" >&2; exit 2;; esac
  run_one "$r"
  sleep 1   # let the ports go before the next run
done

# ---- comparison -------------------------------------------------------------------
echo
echo "=== sip_rate: target rate=$RATE cps, calls=$CALLS, media relay $( [ "$MEDIA" = 1 ] && echo "on (rtpengine)" || echo off) (results: $BENCH_DIR)"
printf '%-10s %-13s %12s %10s %8s %14s %13s  %s\n' run result achieved_cps successful failed cpu_ms_per_call \
  p50/p99_ms "detail (cpu_ms_per_call: the proxy, rtpengine apart; p50/p99: INVITE->200)"
for r in $RUNS; do
  printf '%-10s %-13s %12s %10s %8s %14s %13s  %s\n' "$r" "${RES[$r]}" "${RATEA[$r]}" "${SUCC[$r]:-n/a}" \
    "${FAILN[$r]:-n/a}" "${CPUCALL[$r]:-n/a}" "${RTT[$r]:-n/a}" "${NOTE[$r]:-}"
done
for r in $RUNS; do [ -n "${CHECK[$r]:-}" ] && echo "$r check: ${CHECK[$r]}"; done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a/b; else print "n/a" }'; }
if [[ " $RUNS " == *" kamailio "* && " $RUNS " == *" sipledger "* ]]; then
  echo "ratio sipledger/kamailio: achieved rate $(ratio "${RATEA[sipledger]}" "${RATEA[kamailio]}")x," \
       "CPU per call $(ratio "${CPUCALL[sipledger]:-}" "${CPUCALL[kamailio]:-}")x"
fi
if [[ " $RUNS " == *" sipledger "* && " $RUNS " == *" credit "* ]]; then
  echo "ratio credit/sipledger (auth + credit control vs plain): CPU per call $(ratio "${CPUCALL[credit]:-}" "${CPUCALL[sipledger]:-}")x"
fi
status=0
for r in $RUNS; do [ "${RES[$r]}" = PASS ] || status=1; done
exit $status
