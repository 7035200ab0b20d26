#!/bin/sh
# restart-heap.sh BIN DATADIR OUT: starts `BIN node` on DATADIR, waits (up
# to 30 s) for its API, saves the heap profile (gc=1) two seconds later as
# OUT.heap and VmRSS/VmHWM as OUT.rss, then stops the node. Read the heap
# in use with `go tool pprof -sample_index=inuse_space -top OUT.heap`.
# Used for "Events out of memory" in docs/benchmarks.md.
set -u
BIN=$1; DIR=$2; OUT=$3
T0=$(date +%s.%N)
"$BIN" node --data "$DIR" --http 127.0.0.1:47911 --listen /ip4/127.0.0.1/tcp/47912 --mdns=false --pprof 127.0.0.1:47913 > "$OUT.log" 2>&1 &
PID=$!
up=no
for _ in $(seq 1 300); do
  if curl -sf http://127.0.0.1:47911/api/v1/sync/status > /dev/null 2>&1; then up=yes; break; fi
  sleep 0.1
done
if [ "$up" != yes ]; then
  echo "restart-heap: the node's API did not answer in 30 s (see $OUT.log)" >&2
  kill -INT "$PID"; wait "$PID"; exit 1
fi
T1=$(date +%s.%N)
sleep 2
curl -sf "http://127.0.0.1:47913/debug/pprof/heap?gc=1" -o "$OUT.heap"
grep -E "VmRSS|VmHWM" "/proc/$PID/status" > "$OUT.rss"
echo "api after $(echo "$T1 - $T0" | bc) s" >> "$OUT.rss"
kill -INT "$PID"; wait "$PID"
