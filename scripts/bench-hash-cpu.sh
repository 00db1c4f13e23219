#!/usr/bin/env bash
# The state hash's own CPU inside the bench's nodes (issue 12): process.cpuUsage
# around each part of the hash work, in a scratch copy of REV (plus OVERLAY
# files of the working tree), under one paxos-bench run.
#
#   scripts/bench-hash-cpu.sh [REV] [RUNS]     (defaults: HEAD, 1)
#   OVERLAY="lib/sm/statehash.ts lib/sm/kv.ts" scripts/bench-hash-cpu.sh HEAD 2
#
# lib/sm/kv.ts of the copy is patched (each replacement must match once) to add
# up, per node, the CPU time (user + system) of:
#   step    StateHash.step from KvStateMachine.apply: the bytes, the line
#           digests, and the SHA-256 of waiting slots when 16 wait (settle);
#   asked   digest(), hashAt() and the periodic hash line: the settles that
#           heartbeats, comparisons and the order log trigger;
#   lines   the apply's order-log lines (the " [digest]" suffix's share is in here);
#   loop    (hrtime, one sample per slot: median and mean ns per command) the
#           bytes and line digests of a slot, inside step;
#   settle  StateHash.settle (in step or asked): the SHA-256 of the waiting slots;
#   empty   two cpuUsage calls around nothing, once per 64 slots: the
#           measurement's own bias per interval (median), subtracted from the figures.
# Each node writes its sums to $OUT/<pid> every 256 slots and at exit; the
# script prints us per command per node. Run with nothing else heavy on the
# machine if possible, and read the load average printed with each run.
set -euo pipefail
REV=${1:-HEAD}
RUNS=${2:-1}
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/bench-hash-cpu
OUT=/tmp/bench-hash-cpu.out
BENCH=(bin/paxos-bench --clients 64 --duration 6 --warmup 1 --json)
rm -rf "$DIR"
git clone -q --no-checkout "$REPO" "$DIR"
git -C "$DIR" checkout -q "$(git -C "$REPO" rev-parse "$REV")"
for f in ${OVERLAY:-}; do cp "$REPO/$f" "$DIR/$f"; done
ln -s "$REPO/node_modules" "$DIR/node_modules"
python3 - "$DIR/lib/sm/kv.ts" "$OUT" <<'EOF'
import sys
p, out = sys.argv[1], sys.argv[2]
s = open(p).read()
def sub(old, new):
    global s
    assert s.count(old) == 1, "not found once: " + old
    s = s.replace(old, new)
head = '''
import * as hcFs from 'node:fs';
const HC = { step: 0, asked: 0, lines: 0, empties: [] as number[], intervals: 0, cmds: 0, slots: 0 };
function hcUs(t: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(t);
  return u.user + u.system;
}
function hcSave(): void {
  hcFs.mkdirSync(%r, { recursive: true });
  hcFs.writeFileSync(%r + '/' + process.pid, JSON.stringify(HC));
}
process.on('exit', hcSave);
''' % (out, out)
sub("import { hex, ORDER_LOG_HASH_EVERY, StateHash } from './statehash';\n",
    "import { hex, ORDER_LOG_HASH_EVERY, StateHash } from './statehash';\n" + head)
sub("    const digests = this.stateHash.step(slot, cmds, results);\n",
    "    let hcT = process.cpuUsage();\n"
    "    HC.inStep = 1;\n"
    "    const digests = this.stateHash.step(slot, cmds, results);\n"
    "    HC.inStep = 0;\n"
    "    HC.step += hcUs(hcT);\n"
    "    HC.intervals++;\n"
    "    HC.cmds += cmds.length;\n"
    "    if (++HC.slots % 64 === 0) { hcT = process.cpuUsage(); if (HC.empties.length < 1000) HC.empties.push(hcUs(hcT)); }\n"
    "    if (HC.slots % 256 === 0) hcSave();\n"
    "    hcT = process.cpuUsage();\n")
sub("    // Every ORDER_LOG_HASH_EVERY slots, the rolling hash: logs compare by it alone.\n",
    "    HC.lines += hcUs(hcT);\n"
    "    HC.intervals++;\n"
    "    hcT = process.cpuUsage();\n"
    "    // Every ORDER_LOG_HASH_EVERY slots, the rolling hash: logs compare by it alone.\n")
sub("    if (h) lines.push(`# state hash at slot ${slot}: ${hex(h)}`);\n",
    "    if (h) lines.push(`# state hash at slot ${slot}: ${hex(h)}`);\n"
    "    HC.asked += hcUs(hcT);\n"
    "    HC.intervals++;\n")
for name, call in (("digest(): StateDigest | null {\n    return this.stateHash.digest();\n",
                     "this.stateHash.digest()"),
                    ("hashAt(slot: number): Uint8Array | undefined {\n    return this.stateHash.hashAt(slot);\n",
                     "this.stateHash.hashAt(slot)")):
    first = name.split("\n")[0]
    sub(name, first + "\n    const hcT = process.cpuUsage();\n    const r = " + call +
        ";\n    HC.asked += hcUs(hcT);\n    HC.intervals++;\n    return r;\n")
sub("const HC = {", "const HC = (globalThis as unknown as { HC: any }).HC = { settle: 0, settles: 0, settled: 0, inStep: 0, settleInStep: 0, loopNs: [] as number[],")
open(p, "w").write(s)
# settle()'s share (inside step or asked): the SHA-256 of the waiting slots.
p = p.replace("kv.ts", "statehash.ts")
s = open(p).read()
sub("    const n = this.pendingSlot.length;\n    if (n === 0) return;\n",
    "    const n = this.pendingSlot.length;\n    if (n === 0) return;\n"
    "    const HC = (globalThis as unknown as { HC: any }).HC;\n"
    "    const hcT = process.cpuUsage();\n    try {\n")
sub("    this.h = h;\n    this.dropPending();\n",
    "    this.h = h;\n    this.dropPending();\n"
    "    } finally {\n      const u = process.cpuUsage(hcT);\n"
    "      if (HC) { HC.settle += u.user + u.system; if (HC.inStep) HC.settleInStep += u.user + u.system; HC.settles++; HC.settled += n; }\n    }\n")
# The bytes and line digests of one slot (hrtime: a sample per slot, ns per command).
sub("    const digests: string[] = new Array(cmds.length);\n",
    "    const hcT0 = process.hrtime.bigint();\n"
    "    const digests: string[] = new Array(cmds.length);\n")
sub("    this.slot = slot;\n    // While the chain is unknown",
    "    const HCs = (globalThis as unknown as { HC: any }).HC;\n"
    "    if (HCs && cmds.length > 0 && HCs.loopNs.length < 50000)\n"
    "      HCs.loopNs.push(Number(process.hrtime.bigint() - hcT0) / cmds.length);\n"
    "    this.slot = slot;\n    // While the chain is unknown")
open(p, "w").write(s)
EOF
(cd "$DIR" && "$REPO/node_modules/.bin/tsc" -p tsconfig.json)
echo "rev $(git -C "$DIR" rev-parse --short HEAD)${OVERLAY:+ + working-tree $OVERLAY}; command: node ${BENCH[*]}"
for ((r = 1; r <= RUNS; r++)); do
  rm -rf "$OUT"
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  ops=$( (cd "$DIR" && node "${BENCH[@]}") | node -e '
let s = "";
process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).results[0].opsPerSec));')
  echo "run $r: $ops ops/s; load before $load0, after $(cut -d' ' -f1-3 /proc/loadavg)"
  node -e '
const fs = require("fs");
const dir = process.argv[1];
for (const f of fs.readdirSync(dir).sort()) {
  const h = JSON.parse(fs.readFileSync(dir + "/" + f, "utf8"));
  if (h.cmds < 1000) continue; // the bench client process, or a node that applied little
  const e = [...h.empties].sort((x, y) => x - y);
  const bias = e.length ? e[e.length >> 1] : 0; // the median: a preempted empty interval is not typical
  const per = (us, n) => ((us - bias * n) / h.cmds).toFixed(3);
  const steps = h.slots, lines = h.slots, asked = h.intervals - 2 * h.slots;
  const l = [...h.loopNs].sort((x, y) => x - y);
  const loop = `bytes+line digests of a slot (hrtime, ns per cmd): median ${l[l.length >> 1].toFixed(0)}, mean ${(l.reduce((x, y) => x + y, 0) / l.length).toFixed(0)}`;
  console.log(`  node pid ${f}: ${h.cmds} cmds in ${h.slots} slots (${(h.cmds / h.slots).toFixed(1)}/slot); us per cmd: step ${per(h.step, steps)}, asked ${per(h.asked, asked)} (${asked} calls), all hash ${((h.step + h.asked - bias * (steps + asked)) / h.cmds).toFixed(3)}, of which SHA-256 (settle) ${per(h.settle, h.settles)} (${h.settles} settles, ${(h.settled / h.settles).toFixed(1)} slots each; ${(h.settleInStep / h.cmds).toFixed(3)} in step); lines ${per(h.lines, lines)}; cpuUsage bias ${bias.toFixed(2)} us per interval; ${loop}`);
}' "$OUT"
done
rm -rf "$OUT"
