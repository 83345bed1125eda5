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
#
# Environment (defaults in brackets):
#   SIP_LOAD       the harness [<repo>/../shared/bench/sip/sip_load.sh]
#   PROXY_PORT     [5060]  UAS_PORT [5070]  UAC_PORT [5080]   (loopback only)
#   RUNS           which runs, in order ["kamailio sipledger"]
#   SIPLEDGER_CMD  how to run the CLI [<repo>/.venv/bin/sipledger, or
#                  <repo>/.venv/bin/python -m api.cli when that is not installed]
#   SL_CONFIG      sipledger config [<repo>/bench/sip_rate.toml]; its
#                  static_route is pointed at UAS_PORT automatically
#   BENCH_DIR      where results go [${TMPDIR:-/tmp}/sip-rate/<time>]
#   HOLD_MS, WAIT_IDLE, KAM_*, SIPP_*, MAX_SECS ... are passed to sip_load.sh.
#
# CPU: sip_load.sh counts the proxy PID and its direct children.  That is all
# of Kamailio, but sipledger's proxy workers are grandchildren of `sipledger
# up` (up -> proxy supervisor -> workers), so for sipledger this script adds
# its own measurement of the whole process tree over the same window (the
# moments sip_load.sh snapshots CPU before and after the UAC run), split into
# workers / broker / supervisors.
#
# Exit status: 0 both runs PASS, 1 a run FAILED, 2 usage or setup error.
# Everything started here is stopped by PID (sip_load.sh stops the proxies it
# starts; leftovers of the sipledger tree are killed here by recorded PID).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
RATE="${1:?usage: $0 RATE CALLS}"
CALLS="${2:?usage: $0 RATE CALLS}"
[[ "$RATE" =~ ^[0-9]+$ && "$CALLS" =~ ^[0-9]+$ && "$RATE" -gt 0 && "$CALLS" -gt 0 ]] \
  || { echo "RATE and CALLS must be positive integers" >&2; exit 2; }

SIP_LOAD="${SIP_LOAD:-$HERE/../../shared/bench/sip/sip_load.sh}"
[ -x "$SIP_LOAD" ] || { echo "sip_load.sh not found or not executable: $SIP_LOAD (set SIP_LOAD)" >&2; exit 2; }
SIP_LOAD="$(cd "$(dirname "$SIP_LOAD")" && pwd)/$(basename "$SIP_LOAD")"
export PROXY_HOST=127.0.0.1
export PROXY_PORT="${PROXY_PORT:-5060}" UAS_PORT="${UAS_PORT:-5070}" UAC_PORT="${UAC_PORT:-5080}"
RUNS="${RUNS:-kamailio sipledger}"
SL_CONFIG="${SL_CONFIG:-$REPO/bench/sip_rate.toml}"
BENCH_DIR="${BENCH_DIR:-${TMPDIR:-/tmp}/sip-rate/$(date +%Y%m%d-%H%M%S)-$$}"
PY="$(command -v python3 || echo "$REPO/.venv/bin/python")"
if [ -z "${SIPLEDGER_CMD:-}" ]; then
  if [ -x "$REPO/.venv/bin/sipledger" ]; then SIPLEDGER_CMD="$REPO/.venv/bin/sipledger"
  else SIPLEDGER_CMD="$REPO/.venv/bin/python -m api.cli"; fi
fi
mkdir -p "$BENCH_DIR" || exit 2

SAMPLER_PID=""
TREE_PIDS="$BENCH_DIR/sipledger/tree.pids"   # "pid starttime" of every process seen in the tree
cleanup() {
  [ -n "$SAMPLER_PID" ] && kill -0 "$SAMPLER_PID" 2>/dev/null && kill "$SAMPLER_PID" 2>/dev/null
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
starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }
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
    if " proxy worker" in cmd: return "workers"
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
while time.monotonic() < end:
    snap = record(root)
    if s0 is None and os.path.exists(os.path.join(outdir, "all_ticks0.txt")):
        s0, t0 = snap, time.monotonic()
    elif s0 is not None and os.path.exists(os.path.join(outdir, "all_ticks1.txt")):
        s1, t1 = snap, time.monotonic()
        break
    if not os.path.exists(f"/proc/{root}"):
        break
    time.sleep(0.01)
if s0 is None or s1 is None:
    sys.exit(1)
by = {"workers": 0, "broker": 0, "supervisors": 0}
for p, (ticks, st, cmd) in s1.items():
    base = s0.get(p)
    d = ticks - (base[0] if base and base[1] == st else 0)
    by[kind(cmd)] += max(d, 0)
total = sum(by.values())
with open(result, "w") as f:
    f.write(f"total_s={total / HZ:.3f} window_s={t1 - t0:.3f} "
            + " ".join(f"{k}_s={v / HZ:.3f}" for k, v in by.items())
            + f" pids={len(s1)}\n")
PYEOF
}

# ---- parse a sip_load.sh report -----------------------------------------------
field() { # file regex-prefix -> first token after it
  grep -o -m1 -E "$2[^ ]*" "$1" | head -1 | sed -E "s/^$2//"
}
declare -A RES RATEA CPUCALL SUCC FAILN NOTE

run_one() { # name
  local name=$1 out dir rc
  dir="$BENCH_DIR/$name"; mkdir -p "$dir"; out="$dir/report.txt"
  case "$name" in
    kamailio)
      echo "=== run 1: Kamailio (reference) rate=$RATE calls=$CALLS ports proxy=$PROXY_PORT uas=$UAS_PORT uac=$UAC_PORT"
      PROXY=kamailio OUTDIR="$dir/sip_load" "$SIP_LOAD" "$RATE" "$CALLS" 2>&1 | tee "$out"
      rc=${PIPESTATUS[0]}
      ;;
    sipledger)
      echo "=== run 2: sipledger rate=$RATE calls=$CALLS ports proxy=$PROXY_PORT uas=$UAS_PORT uac=$UAC_PORT"
      local data="$dir/data" cfg="$dir/sip_rate.toml" wrapper="$dir/run_sipledger.sh"
      mkdir -p "$data"
      [ -f "$SL_CONFIG" ] || { echo "config not found: $SL_CONFIG" >&2; return 2; }
      sed -E "s#^(static_route *= *\"sip:127\.0\.0\.1:)[0-9]+\"#\1$UAS_PORT\"#" "$SL_CONFIG" >"$cfg"
      # the wrapper keeps its PID through both execs: that PID is `sipledger up`
      cat >"$wrapper" <<EOF
#!/usr/bin/env bash
echo \$\$ >"$dir/sipledger.pid"
cd "$REPO"
export SIPLEDGER_DATA_DIR="$data" SIPLEDGER_CONFIG="$cfg" PYTHONPATH="$REPO\${PYTHONPATH:+:\$PYTHONPATH}"
exec $SIPLEDGER_CMD up --sip-port $PROXY_PORT
EOF
      chmod +x "$wrapper"
      write_sampler "$dir/sampler.py"
      : >"$TREE_PIDS"
      "$PY" "$dir/sampler.py" "$dir/sipledger.pid" "$dir/sip_load" "$dir/cpu_tree.txt" "$TREE_PIDS" \
        "$(( CALLS / RATE + 120 ))" &
      SAMPLER_PID=$!
      PROXY=cmd PROXY_CMD="$wrapper" OUTDIR="$dir/sip_load" "$SIP_LOAD" "$RATE" "$CALLS" 2>&1 | tee "$out"
      rc=${PIPESTATUS[0]}
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
  local ok=${SUCC[$name]:-0}; [[ "$ok" =~ ^[0-9]+$ ]] || ok=0
  if [ "$name" = kamailio ]; then
    pcpu=$(grep -o -m1 -E 'proxy=[0-9]+%' "$out" | tr -dc '0-9')
    if [ -n "$pcpu" ] && [ "$ok" -gt 0 ] && [ -n "$wall" ]; then
      CPUCALL[$name]=$(awk -v p="$pcpu" -v w="$wall" -v n="$ok" 'BEGIN{printf "%.3f", p/100*w*1000/n}')
      NOTE[$name]="proxy ${pcpu}% of a core over ${wall}s"
    fi
  else
    if [ -s "$dir/cpu_tree.txt" ] && [ "$ok" -gt 0 ]; then
      local tot
      tot=$(field "$dir/cpu_tree.txt" 'total_s=')
      CPUCALL[$name]=$(awk -v t="$tot" -v n="$ok" 'BEGIN{printf "%.3f", t*1000/n}')
      NOTE[$name]="whole tree $(sed 's/ pids=.*//' "$dir/cpu_tree.txt")"
    else
      NOTE[$name]="no whole-tree CPU sample (did sipledger start?)"
    fi
  fi
  return 0
}

for r in $RUNS; do
  case "$r" in kamailio|sipledger) ;; *) echo "unknown run '$r' in RUNS" >&2; exit 2;; esac
  run_one "$r"
  sleep 1   # let the ports go before the next run
done

# ---- comparison -------------------------------------------------------------------
echo
echo "=== sip_rate: target rate=$RATE cps, calls=$CALLS (results: $BENCH_DIR)"
printf '%-10s %-13s %12s %10s %8s %14s  %s\n' run result achieved_cps successful failed cpu_ms_per_call detail
for r in $RUNS; do
  printf '%-10s %-13s %12s %10s %8s %14s  %s\n' "$r" "${RES[$r]}" "${RATEA[$r]}" "${SUCC[$r]:-n/a}" \
    "${FAILN[$r]:-n/a}" "${CPUCALL[$r]:-n/a}" "${NOTE[$r]:-}"
done
if [[ " $RUNS " == *" kamailio "* && " $RUNS " == *" sipledger "* ]]; then
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a/b; else print "n/a" }'; }
  echo "ratio sipledger/kamailio: achieved rate $(ratio "${RATEA[sipledger]}" "${RATEA[kamailio]}")x," \
       "CPU per call $(ratio "${CPUCALL[sipledger]:-}" "${CPUCALL[kamailio]:-}")x"
fi
status=0
for r in $RUNS; do [ "${RES[$r]}" = PASS ] || status=1; done
exit $status
