#!/usr/bin/env bash
# Runs one OBEX session between `obex_test -i` (openobex-apps; the independent peer) and a client
# command, inside the private network namespace this script is started in:
#
#   unshare -n bash run_obex_test.sh SRVDIR PCAP -- CLIENT [ARGS...]
#
# obex_test listens on TCP *:650 with no way to choose the port or address, hence `unshare -n`.
# It writes the received object, under its Name header, into its working directory SRVDIR; its
# log goes to SRVDIR/../server.log. One `s` command = one server session: a second `s` in the same
# process fails with "Server register error! (TCP)", so one run serves exactly one connection.
# PCAP (may be empty): capture the session with tshark for an independent decode.
# Every wait is a poll with a deadline; the caller also wraps this in `timeout`.
set -u
srv=$1; pcap=$2; shift 3
ip link set lo up || { echo "cannot bring lo up" >&2; exit 90; }
base=$(dirname "$srv")
mkdir -p "$srv"
ctl="$base/ctl"; rm -f "$ctl"; mkfifo "$ctl"

cd "$srv"
obex_test -i < "$ctl" > "$base/server.log" 2>&1 &
SRV=$!
TS=
# Whatever way this script ends, nothing it started outlives it.
trap 'kill $SRV $TS 2>/dev/null' EXIT
exec 3> "$ctl"
echo s >&3

# Capture readiness is proven by traffic, not by tshark's banner (which comes before dumpcap
# really captures): probe datagrams to UDP port 9 (discard; tshark lists it as plain UDP) are sent
# until tshark lists one (`-P -l` prints a summary line per packet while writing the file).
# The start and end probes differ in length, so the summary's "Len=N" tells them apart.
probe() { # $1 = probe text; waits (30 s deadline) until tshark lists a datagram of its length
  local len=$(( ${#1} + 1 )) deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    echo "$1" 2>/dev/null > /dev/udp/127.0.0.1/9
    grep -qE "(→|->) 9 Len=$len\b" "$base/tshark.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "tshark saw no $len-octet probe to UDP 9 within 30 s" >&2; cat "$base/tshark.err" >&2; return 1
}
if [ -n "$pcap" ]; then
  tshark -i lo -f 'tcp port 650 or udp port 9' -w "$pcap" -P -l \
    > "$base/tshark.out" 2> "$base/tshark.err" &
  TS=$!
  probe start || exit 92
fi
for _ in $(seq 200); do ss -ltn | grep -q ':650 ' && break; sleep 0.05; done
ss -ltn | grep -q ':650 ' || { echo "obex_test is not listening on 650" >&2; cat "$base/server.log" >&2; exit 91; }

"$@"
rc=$?

echo q >&3; exec 3>&-
for _ in $(seq 100); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.05; done
kill "$SRV" 2>/dev/null
if [ -n "$TS" ]; then
  probe end-of-session || rc=93   # everything sent before this probe has been captured
  kill -INT "$TS" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$TS" 2>/dev/null || break; sleep 0.05; done
  kill "$TS" 2>/dev/null
fi
wait
exit $rc
