#!/usr/bin/env bash
# bench/worker_split.sh RATE CALLS
#
# Where a proxy worker's CPU goes under bench/sip_rate.sh's load, part by part
# (bench/worker_split.py says how and why): runs sip_rate.sh (sipledger only)
# with the instrumentation loaded into the workers, then prints CPU per call of
# each part summed over the workers.
#
#   bench/worker_split.sh 1000 15000
#   SPLIT_NOPUB=1 bench/worker_split.sh 1000 15000     # the event publisher off
#
# Other variables go to sip_rate.sh (PROXY_PORT, UAS_PORT, UAC_PORT ...).
# Exit status: sip_rate.sh's.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
RATE="${1:?usage: $0 RATE CALLS}"
CALLS="${2:?usage: $0 RATE CALLS}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/worker-split.XXXXXX")"
mkdir -p "$OUT/site" "$OUT/parts"
# every Python process of the tree imports this; worker_split.py acts only in workers
printf 'import runpy\nrunpy.run_path(%s, run_name="worker_split")\n' "'$HERE/worker_split.py'" >"$OUT/site/sitecustomize.py"
SPLIT_OUT="$OUT/parts" PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}" RUNS=sipledger \
  "$HERE/sip_rate.sh" "$RATE" "$CALLS" | tee "$OUT/sip_rate.txt"
status=${PIPESTATUS[0]}
calls="$(awk '$1 == "sipledger" && $3 ~ /^[0-9.]+$/ {print $4}' "$OUT/sip_rate.txt" | tail -1)"
if [ -z "$calls" ] || [ "$calls" = 0 ] || [ -z "$(ls -A "$OUT/parts")" ]; then
  echo "worker_split: no calls or no worker samples (see $OUT)" >&2
  exit 1
fi
echo
echo "=== worker CPU by part, $calls calls over both workers (SPLIT_NOPUB=${SPLIT_NOPUB:-0}); files: $OUT"
"$HERE/../.venv/bin/python" "$HERE/worker_split.py" "$OUT/parts" "$calls"
exit "$status"
