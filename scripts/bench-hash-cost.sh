#!/usr/bin/env bash
# What the rolling state hash (issue 12) costs in throughput: the bench with the
# hash on vs off, in interleaved pairs so that the machine's load drifts alike
# over both.
#
#   scripts/bench-hash-cost.sh [PAIRS] [REV] [BASE]  (defaults: 8 pairs, HEAD, none)
#   OVERLAY="lib/sm/statehash.ts lib/sm/kv.ts" scripts/bench-hash-cost.sh 10
#                 (REV with those files of the working tree copied over it: a
#                 change measured before it is committed, without the other
#                 uncommitted files of a shared tree)
#   With BASE (an older rev, e.g. the one before a change to the hash's cost),
#   a third copy "base" (BASE as committed, hash on) joins each round: rounds
#   of three runs in rotating order, and the ratios base/off and on/base come
#   from the same run as on/off.
#
# Builds two scratch copies of REV in /tmp: "on" as committed, "off" without
# the feature, as the order log and heartbeats were before it: StateHash.step
# never called (no bytes written, no line digests, no SHA-256), order-log lines
# without their " [digest]" suffix and no "# state hash" lines, no hash in
# heartbeats (digest() is null), so no comparison and no adoption either. (An
# earlier "off" only short-circuited step: it still formatted a zero digest on
# every line, made a hash buffer per slot and sent and compared heartbeat
# hashes, so it measured part of the feature only.) Then runs, per pair, once
# each in alternating order (on first in odd pairs, off first in even ones):
#   node bin/paxos-bench --clients 64 --duration 6 --warmup 1 --json
# and prints every figure (ops/s, and the three nodes' CPU time per operation,
# which other processes' load disturbs less than throughput), mean and median
# of each side, the ratios, and the load average before and after. On a shared
# machine compare the ratios of one run, never figures of different runs.
set -euo pipefail
PAIRS=${1:-8}
REV=${2:-HEAD}
BASE=${3:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)
ON=/tmp/bench-hash-on
OFF=/tmp/bench-hash-off
BASEDIR=/tmp/bench-hash-base
BENCH=(bin/paxos-bench --clients 64 --duration 6 --warmup 1 --json)

build() { # DIR [REV2]: a clean copy of REV (plus OVERLAY), or of REV2 as committed; node_modules shared
  rm -rf "$1"
  git clone -q --no-checkout "$REPO" "$1"
  git -C "$1" checkout -q "$(git -C "$REPO" rev-parse "${2:-$REV}")"
  if [ -z "${2:-}" ]; then for f in ${OVERLAY:-}; do cp "$REPO/$f" "$1/$f"; done; fi
  ln -s "$REPO/node_modules" "$1/node_modules"
}
build "$ON"
build "$OFF"
if [ -n "$BASE" ]; then
  build "$BASEDIR" "$BASE"
  (cd "$BASEDIR" && "$REPO/node_modules/.bin/tsc" -p tsconfig.json)
fi
# The off switch: the feature removed (see above). Each replacement must match
# exactly once, so a change to these lines stops the script instead of
# measuring something else.
python3 - "$OFF/lib/sm" <<'EOF'
import sys
d = sys.argv[1]
def sub(f, old, new):
    p = d + "/" + f
    s = open(p).read()
    assert s.count(old) == 1, f + ": not found once: " + old
    open(p, "w").write(s.replace(old, new))
sub("kv.ts", "this.stateHash.step(slot, cmds, results)", "([] as string[])")
sub("kv.ts", " [${digests[i]}]`", "`")
for sig in ("  digest(): StateDigest | null {\n", "  get hash(): Uint8Array | null {\n"):
    sub("statehash.ts", sig, sig + "    if (this.slot >= 0) return null;\n")
sig = "  adopt(slot: number, hash: Uint8Array): boolean {\n"
sub("statehash.ts", sig, sig + "    if (slot >= 0) return false;\n")
EOF
(cd "$ON" && "$REPO/node_modules/.bin/tsc" -p tsconfig.json)
(cd "$OFF" && "$REPO/node_modules/.bin/tsc" -p tsconfig.json)

ops() { # DIR -> "OPS/S CPU-US/OP" of one bench run (CPU: the nodes' user+system per operation)
  (cd "$1" && node "${BENCH[@]}") | node -e '
let s = "";
process.stdin.on("data", (d) => (s += d)).on("end", () => {
  const r = JSON.parse(s).results[0];
  const cpu = r.cpu.nodes.reduce((a, n) => a + n.pct, 0) / 100;
  console.log(r.opsPerSec, ((cpu * r.durationS * 1e6) / r.ops).toFixed(1));
});'
}
echo "rev $(git -C "$ON" rev-parse --short HEAD)${OVERLAY:+ + working-tree $OVERLAY}${BASE:+; base $(git -C "$BASEDIR" rev-parse --short HEAD)}; command (in each copy): node ${BENCH[*]}"
echo "load before: $(cat /proc/loadavg)"
on=()
off=()
onc=()
offc=()
base=()
basec=()
for ((i = 1; i <= PAIRS; i++)); do
  if [ -n "$BASE" ]; then
    # Rotating order: on off base, off base on, base on off.
    for k in 0 1 2; do
      case $(((i + k) % 3)) in
        1) read -r a ac < <(ops "$ON") ;;
        2) read -r b bc < <(ops "$OFF") ;;
        0) read -r c cc < <(ops "$BASEDIR") ;;
      esac
    done
    base+=("$c")
    basec+=("$cc")
  elif ((i % 2)); then
    read -r a ac < <(ops "$ON")
    read -r b bc < <(ops "$OFF")
  else
    read -r b bc < <(ops "$OFF")
    read -r a ac < <(ops "$ON")
  fi
  on+=("$a")
  off+=("$b")
  onc+=("$ac")
  offc+=("$bc")
  echo "pair $i: ops/s on $a off $b ratio $(node -e "console.log(($a/$b).toFixed(3))");" \
    "CPU us/op on $ac off $bc;${BASE:+ base $c ops/s, $cc us/op;} load $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "load after: $(cat /proc/loadavg)"
node -e '
const [on, off, onc, offc] = process.argv.slice(1).map((s) => s.split(" ").map(Number));
const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
const median = (a) => { const b = [...a].sort((x, y) => x - y), m = b.length >> 1; return b.length % 2 ? b[m] : (b[m - 1] + b[m]) / 2; };
const ratios = on.map((x, i) => x / off[i]);
console.log(`on  ${on.join(" ")}  mean ${mean(on).toFixed(0)} median ${median(on).toFixed(0)}`);
console.log(`off ${off.join(" ")}  mean ${mean(off).toFixed(0)} median ${median(off).toFixed(0)}`);
console.log(`on/off: ratio of means ${(mean(on) / mean(off)).toFixed(3)}, ratio of medians ${(median(on) / median(off)).toFixed(3)}, median of pair ratios ${median(ratios).toFixed(3)}; pairs with on slower: ${ratios.filter((r) => r < 1).length} of ${ratios.length}`);
const cr = onc.map((x, i) => x / offc[i]);
console.log(`CPU us/op on  ${onc.join(" ")}  mean ${mean(onc).toFixed(1)} median ${median(onc).toFixed(1)}`);
console.log(`CPU us/op off ${offc.join(" ")}  mean ${mean(offc).toFixed(1)} median ${median(offc).toFixed(1)}`);
console.log(`CPU per op on/off: ratio of means ${(mean(onc) / mean(offc)).toFixed(3)}, ratio of medians ${(median(onc) / median(offc)).toFixed(3)}, median of pair ratios ${median(cr).toFixed(3)}`);
if (process.argv[5]) {
  const [base, basec] = process.argv.slice(5).map((s) => s.split(" ").map(Number));
  const br = base.map((x, i) => x / off[i]);
  console.log(`base ${base.join(" ")}  mean ${mean(base).toFixed(0)} median ${median(base).toFixed(0)}`);
  console.log(`base/off: ratio of means ${(mean(base) / mean(off)).toFixed(3)}, median of round ratios ${median(br).toFixed(3)}; on/base: ratio of means ${(mean(on) / mean(base)).toFixed(3)}`);
  console.log(`CPU us/op base ${basec.join(" ")}  mean ${mean(basec).toFixed(1)}; base/off ${(mean(basec) / mean(offc)).toFixed(3)}, on/base ${(mean(onc) / mean(basec)).toFixed(3)}`);
}
' "${on[*]}" "${off[*]}" "${onc[*]}" "${offc[*]}" ${BASE:+"${base[*]}" "${basec[*]}"}
