#!/usr/bin/env bash
# Kannel's PPG (bearerbox + wapbox, SMPP to the npm smpp simulator) pushing N DM notifications;
# prints the simulator-side submit_sm/s, comparable with `cargo bench --bench wap`.
# usage (root): unshare -n bash benches/wap_kannel/run.sh [N] [WINDOW]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=${1:-2000}
WINDOW=${2:-50}
ip link set lo up
work=$(mktemp -d)
port=12775
node "$root/tests/peers/smpp/smsc-sim.js" --port $port --detached --no-dlr --stats-every "$N" ${SIM_LOG:+--log "$work/smsc.jsonl"} > "$work/sim.out" < /dev/null &
SIM=$!
pids=($SIM)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_for() { # $1 = description, $2.. = command; 20 s deadline
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timeout waiting for $what (logs in $work)" >&2; for f in "$work"/*.out; do tail -n 5 "$f" >&2; done; exit 1
}
wait_for simulator grep -q LISTENING "$work/sim.out"
sed -e "s|@WORK@|$work|g" -e "s|@PORT@|$port|" -e "s|@WINDOW@|$WINDOW|" -e "s|@ADMIN_PORT@|23000|" \
  -e "s|@SMSBOX_PORT@|23001|" -e "s|@WAPBOX_PORT@|23002|" -e "s|@PPG_PORT@|23080|" "$here/ppg.conf.in" > "$work/ppg.conf"
bearerbox -v 4 "$work/ppg.conf" > "$work/bb.out" 2>&1 & pids+=($!)
wait_for bearerbox bash -c "exec 3<>/dev/tcp/127.0.0.1/23002"
wapbox -v 4 "$work/ppg.conf" > "$work/wap.out" 2>&1 & pids+=($!)
wait_for wapbox bash -c "exec 3<>/dev/tcp/127.0.0.1/23080"
sleep 1 # let bearerbox finish its SMPP bind (no observable signal without the simulator log)
t0=$(date +%s%3N)
python3 "$here/pap_load.py" http://127.0.0.1:23080/wappush +491701234567 "$N" 20
t1=$(date +%s%3N)
wait_for "all $N submit_sm at the simulator" bash -c "[ \$(grep -c '^SUBMITS' '$work/sim.out') -ge 2 ]"
first=$(grep '^SUBMITS 1 ' "$work/sim.out" | awk '{print $3}')
last=$(grep "^SUBMITS $N " "$work/sim.out" | awk '{print $3}')
echo "kannel: $N pushes; PAP accepted in $((t1 - t0)) ms ($(echo "scale=1; $N*1000/($t1-$t0)" | bc) PAP/s)"
echo "kannel: submit_sm first→last $((last - first)) ms = $(echo "scale=1; ($N-1)*1000/($last-$first)" | bc) submit_sm/s; PAP start→last submit $((last - t0)) ms = $(echo "scale=1; $N*1000/($last-$t0)" | bc) pushes/s"
