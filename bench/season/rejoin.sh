#!/usr/bin/env bash
# rejoin.sh runs a new venue again against the loaded node of a season
# benchmark's kept work directory (go test ./bench/season ... -season.keep),
# without the hour of payments that made it: the loaded node restarts on its
# store (its history, and the payments made after the checkpoint the
# benchmark saved), a fresh venue is admitted and joins it, and the venue's
# RSS is sampled every EVERY seconds (rss.txt: seconds since its start,
# VmRSS, RssAnon, RssFile in kB). At the end it prints the venue's median RSS after FROM seconds
# (default: over the second half of the run), its sampled peak, its
# high-water mark (VmHWM) and whether it started from the checkpoint, and
# saves its heap profile (heap.pb.gz); then the loaded node's high-water
# mark before the new venue started and at the end (serving the new venue
# its checkpoint, catch-up and history), and its highest sampled VmRSS
# with its anonymous and file-mapped parts (loaded.rss.txt, same columns).
#
# Usage: bench/season/rejoin.sh WORKDIR OUTDIR [SECONDS] [VAR=value ...]
#   WORKDIR  the work directory the benchmark logged ("work directory: ...")
#   OUTDIR   where this run writes (emptied first)
#   SECONDS  how long the new venue runs (default 150)
#   VAR=value  environment of the new venue only (e.g. GOGC=100)
# Environment: BIN, the cagnotte binary (default: go build of this checkout);
# PORT, the first of the five loopback ports it uses (default 18080); FROM,
# the second after which the median is taken (default SECONDS/2); EVERY,
# the sampling interval in seconds (default 1; 0.1 shows where a
# momentary peak happens); SMAPS_AT, a second at which the venue's
# resident memory by mapping is written to smaps.txt (default: none).
#
# Each run admits its venue to the kept federation and revokes it at the
# end: the next run's checkpoint is then still attested by a quorum of the
# current venues (otherwise the venue falls back to a full catch-up, which
# the summary line shows as "from checkpoint: no").
set -euo pipefail

if [ $# -lt 2 ]; then
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 2
fi
work=$1
out=$2
shift 2
secs=150
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
	secs=$1
	shift
fi
[ -d "$work/node" ] && [ -d "$work/node-federation" ] || {
	echo "rejoin: $work is not a kept season work directory (no node/ and node-federation/)" >&2
	exit 2
}
port=${PORT:-18080}
if [ -z "${BIN:-}" ]; then
	BIN=$(mktemp -d)/cagnotte
	(cd "$(dirname "$0")/../.." && go build -o "$BIN" ./cmd/cagnotte)
fi
rm -rf "$out"
mkdir -p "$out"

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$BIN" node --data "$work/node" --http 127.0.0.1:$port --listen /ip4/127.0.0.1/tcp/$((port + 1)) \
	--mdns=false >"$out/loaded.log" 2>&1 &
loaded=$!
pids+=($loaded)
peer=""
for _ in $(seq 1 300); do
	peer=$(grep -o ' peer=[A-Za-z0-9]*' "$out/loaded.log" | head -1 | cut -d= -f2 || true)
	[ -n "$peer" ] && break
	sleep 0.1
done
[ -n "$peer" ] || { echo "rejoin: the loaded node did not start; see $out/loaded.log" >&2; exit 1; }

starthwm=$(awk '/^VmHWM:/ {print int($2 / 1024)}' /proc/$loaded/status)
"$BIN" node init --data "$out/newvenue" >"$out/init.txt" 2>&1
newpeer=$(awk '/^peer id:/ {print $3}' "$out/init.txt")
"$BIN" federation admit --dir "$work/node-federation" --peer "$newpeer" --name "New venue" \
	--out "$out/newvenue.ops" >"$out/admit.txt" 2>&1
env "$@" "$BIN" node --data "$out/newvenue" --federation "$out/newvenue.ops" --http 127.0.0.1:$((port + 2)) \
	--listen /ip4/127.0.0.1/tcp/$((port + 3)) --mdns=false --pprof 127.0.0.1:$((port + 4)) \
	--bootstrap "/ip4/127.0.0.1/tcp/$((port + 1))/p2p/$peer" >"$out/newvenue.log" 2>&1 &
nv=$!
pids+=($nv)
every=${EVERY:-1}
t0=$(date +%s.%N)
while :; do
	kill -0 "$nv" 2>/dev/null || { echo "rejoin: the new venue exited; see $out/newvenue.log" >&2; exit 1; }
	t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	awk -v t="$t" -v s="$secs" 'BEGIN { exit !(t >= s) }' && break
	echo "$t $(awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s ", $2}' /proc/$nv/status)" >>"$out/rss.txt"
	echo "$t $(awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s ", $2}' /proc/$loaded/status)" >>"$out/loaded.rss.txt"
	if [ -n "${SMAPS_AT:-}" ] && [ ! -e "$out/smaps.txt" ] && awk -v t="$t" -v s="$SMAPS_AT" 'BEGIN { exit !(t >= s) }'; then
		# Resident memory by kind of mapping: anonymous, the binary, sst, mem, vlog.
		awk '/^[0-9a-f]+-[0-9a-f]+ / { f = $6; next }
			/^Rss:/ { if (f != "") { n = split(f, a, "."); r[a[n]] += $2 } else r["anon"] += $2 }
			END { for (e in r) if (r[e] > 1024) printf "%s %d MiB\n", e, r[e] / 1024 }' /proc/$nv/smaps | sort -k2 -n -r >"$out/smaps.txt"
	fi
	sleep "$every"
done
hwm=$(awk '/^VmHWM:/ {print int($2 / 1024)}' /proc/$nv/status)
loadedhwm=$(awk '/^VmHWM:/ {print int($2 / 1024)}' /proc/$loaded/status)
curl -sf -o "$out/heap.pb.gz" "http://127.0.0.1:$((port + 4))/debug/pprof/heap" || true
cleanup
pids=()
"$BIN" federation revoke --dir "$work/node-federation" --peer "$newpeer" --after-seq 0 \
	--reason "benchmark venue of rejoin.sh" >"$out/revoke.txt" 2>&1

ckpt=no
grep -q 'started from an attested checkpoint' "$out/newvenue.log" && ckpt=yes
awk -v from=${FROM:-$((secs / 2))} -v ckpt=$ckpt -v hwm="$hwm" '
	{ if ($2 > peak) peak = $2 }
	$1 > from { n++; rss[n] = $2; anon[n] = $3; file[n] = $4 }
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return a[int((n + 1) / 2)]
	}
	END {
		printf "new venue: from checkpoint: %s; RSS median after %d s %d MiB (anonymous %d, file-mapped %d), sampled peak %d MiB, high-water mark (VmHWM) %s MiB\n",
			ckpt, from, median(rss, n) / 1024, median(anon, n) / 1024, median(file, n) / 1024, peak / 1024, hwm
	}' "$out/rss.txt"
awk -v starthwm="$starthwm" -v loadedhwm="$loadedhwm" '
	$2 > peak { peak = $2; at = $1; anon = $3; file = $4 }
	END {
		printf "loaded node: high-water mark (VmHWM) %s MiB after its start, %s MiB after serving the new venue; sampled peak %d MiB at %s s (anonymous %d, file-mapped %d)\n",
			starthwm, loadedhwm, peak / 1024, at, anon / 1024, file / 1024
	}' "$out/loaded.rss.txt"
