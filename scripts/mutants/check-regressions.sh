#!/usr/bin/env bash
# Proof that each patch really reverts its fix: in one scratch copy of HEAD,
# apply each patch in turn, build, run the regression test files and list the
# failing subtests (each patch must make its own regression test fail).
#
#   scripts/mutants/check-regressions.sh [PATCH...]     (default: every patch here)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if [ $# -eq 0 ]; then set -- "$HERE"/*.patch; fi
TESTS=(core-regressions core-attack core-rejoin-reserve core-freshness core-attack3 core-attack4 core-attack5 core-attack6 core-membership sim-membership)

SCRATCH=$(mktemp -d /tmp/mutant-regressions.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
(cd "$REPO" && git archive HEAD) | tar -x -C "$SCRATCH"
ln -s "$REPO/node_modules" "$SCRATCH/node_modules"
cd "$SCRATCH"

for p in "$@"; do
  [ -f "$p" ] || p="$HERE/$p"
  name=$(basename "$p" .patch)
  patch -p1 --quiet <"$p"
  if ! npx tsc -p tsconfig.json >build.log 2>&1; then
    echo "$name: build failed"
    tail -5 build.log
  else
    failed=""
    for t in "${TESTS[@]}"; do
      # Top-level subtests of a file run directly: "not ok N - <name> # time=...".
      out=$(timeout 300 node "dist/test/$t.test.js" 2>/dev/null | grep -E '^not ok [0-9]+ - ' | sed -E 's/^not ok [0-9]+ - //; s/ # time=.*//' || true)
      [ -n "$out" ] && failed+=$(printf '%s\n' "$out" | sed "s/^/  $t: /")$'\n'
    done
    if [ -n "$failed" ]; then
      echo "$name: regression tests fail:"
      printf '%s' "$failed"
    else
      echo "$name: NO regression test fails"
    fi
  fi
  patch -p1 -R --quiet <"$p"
done
