#!/usr/bin/env bash
# Mutation hunt (issue 9): revert one fix (a patch of scripts/mutants/) in a
# scratch copy, build it, and run random simulator seeds until the first
# failure or the time cap. Then check the unreverted code on that seed.
#
#   scripts/hunt-mutant.sh PATCH [--family F] [--seconds 600] [--start S] [--worktree] [--keep]
#
# --family F   pin the schedule family (default: drawn from each seed)
# --seconds T  time cap of the hunt, wall clock (default 600)
# --start S    first seed (default 1); seeds S, S+1, ... each draws its node count
# --worktree   copy the working tree's tracked files instead of HEAD (uncommitted work)
# --keep       keep the scratch copy (its path is printed)
#
# Prints one line:
#   PATCH: first failure seed S (N nodes) after T s: <invariant>
#   PATCH: not found in T s (K seeds)
# and, after a failure, whether the unreverted code passes the same seed.
# Exit status: 0 found, 1 not found, 2 usage or build error.
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[ $# -ge 1 ] || usage
PATCH=$1
shift
FAMILY=""
SECONDS_CAP=600
START=1
WORKTREE=0
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --family) FAMILY=$2; shift 2 ;;
    --seconds) SECONDS_CAP=$2; shift 2 ;;
    --start) START=$2; shift 2 ;;
    --worktree) WORKTREE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "hunt-mutant: unknown argument $1" >&2; usage ;;
  esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$PATCH" ] || PATCH="$REPO/scripts/mutants/$PATCH"
[ -f "$PATCH" ] || { echo "hunt-mutant: no patch $PATCH" >&2; exit 2; }
PATCH=$(cd "$(dirname "$PATCH")" && pwd)/$(basename "$PATCH")
NAME=$(basename "$PATCH" .patch)

SCRATCH=$(mktemp -d "/tmp/hunt-$NAME.XXXXXX")
cleanup() { [ "$KEEP" = 1 ] && echo "scratch copy kept: $SCRATCH" >&2 || rm -rf "$SCRATCH"; }
trap cleanup EXIT

# The tracked tree only (no dist/, no other agents' untracked files).
if [ "$WORKTREE" = 1 ]; then
  (cd "$REPO" && git ls-files -z | xargs -0 cp --parents -t "$SCRATCH")
else
  (cd "$REPO" && git archive HEAD) | tar -x -C "$SCRATCH"
fi
ln -s "$REPO/node_modules" "$SCRATCH/node_modules"
cd "$SCRATCH"

build() {
  rm -rf dist
  if ! npx tsc -p tsconfig.json >build.log 2>&1; then
    echo "hunt-mutant: build failed ($1):" >&2
    tail -20 build.log >&2
    exit 2
  fi
}

if ! patch -p1 --quiet <"$PATCH"; then
  echo "hunt-mutant: $NAME does not apply" >&2
  exit 2
fi
build "patched"

# One process runs seeds until the first failure or the cap (the simulator is
# deterministic: the seed and options replay the failure exactly).
cat >hunt.js <<'EOF'
const { runSimulation } = require('./dist/lib/sim/cluster.js');
const [name, family, cap, start] = process.argv.slice(2);
const opts = family ? { family } : {};
const t0 = Date.now();
let seeds = 0;
for (let seed = Number(start); ; seed++) {
  const elapsed = (Date.now() - t0) / 1000;
  if (elapsed >= Number(cap)) {
    console.log(`${name}: not found in ${elapsed.toFixed(1)} s (${seeds} seeds from ${start})`);
    process.exit(1);
  }
  const r = runSimulation(seed, opts);
  seeds++;
  if (!r.ok) {
    const t = ((Date.now() - t0) / 1000).toFixed(1);
    console.log(
      `${name}: first failure seed ${seed} (${r.nodes} nodes) after ${t} s (${seeds} seeds): ${r.failure.invariant}`,
    );
    console.log(`  ${r.failure.detail.split('\n')[0]}`);
    console.log(`  family=${r.config.family} post-heal=${r.config.postHeal}`);
    console.log(`  replay: npm run sim -- --seed ${seed}${family ? ` --family ${family}` : ''}`);
    console.log(`SEED ${seed}`);
    process.exit(0);
  }
}
EOF
set +e
OUT=$(node hunt.js "$NAME" "$FAMILY" "$SECONDS_CAP" "$START")
RC=$?
set -e
echo "$OUT" | grep -v '^SEED '
[ $RC -eq 0 ] || exit 1

# The same seed on the unreverted code must pass.
SEED=$(echo "$OUT" | sed -n 's/^SEED //p')
patch -p1 -R --quiet <"$PATCH"
build "unpatched"
if node dist/lib/cli/sim.js --seed "$SEED" ${FAMILY:+--family "$FAMILY"} >base.log 2>&1; then
  echo "  unreverted code: seed $SEED passes"
else
  echo "  unreverted code: seed $SEED FAILS too (not the mutant's failure):"
  grep -m1 '^FAIL' base.log | sed 's/^/  /'
fi
exit 0
