#!/usr/bin/env bash
# The sfcdc reliability suite (see "The reliability suite" in README.md).
#
#   scripts/reliability.sh [--quick] [--kills N] [--hits N]
#                          [--only crash,faults,retention,postgres,disk,fleet]
#                          [--pg system|private] [--pg-url URL] [--seed N] [--keep] [--json FILE]
#
# Builds the debug binary (or uses $SFCDC_BIN), then runs scripts/reliability/suite.py, which
# drives `sfcdc emulator` and `sfcdc run` as separate processes on loopback and prints the
# ledger. Needs root for the disk scenario (tmpfs mount) and the PostgreSQL restart.
#
# The driver cleans up after itself; this wrapper is the second line: if the driver dies, it
# kills the children the driver recorded (by pid, only if still an sfcdc process), unmounts what
# it mounted, starts PostgreSQL again if the driver had stopped it, drops the scratch database,
# and removes the scratch directory (unless --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${SFCDC_BIN:-}" ]]; then
  cargo build --bin sfcdc
  SFCDC_BIN="$PWD/target/debug/sfcdc"
fi
export SFCDC_BIN

keep=0
for a in "$@"; do [[ "$a" == "--keep" ]] && keep=1; done
work="$(mktemp -d "${TMPDIR:-/tmp}/sfcdc-reliability-XXXXXX")"
driver=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [[ -n "$driver" ]] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  if [[ -f "$work/pids" ]]; then
    while read -r pid; do
      if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$work/sfcdc "; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$work/pids"
  fi
  if [[ -f "$work/mounts" ]]; then
    while read -r m; do
      if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m" || true; fi
    done <"$work/mounts"
  fi
  if [[ -f "$work/pg-stopped" ]]; then
    echo "reliability.sh: PostgreSQL was left stopped; starting it: $(cat "$work/pg-stopped")" >&2
    $(cat "$work/pg-stopped") || true
  fi
  if [[ -f "$work/pg-scratch" ]]; then
    while read -r url db; do
      echo "reliability.sh: dropping the scratch database $db" >&2
      psql "$url" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
    done <"$work/pg-scratch"
  fi
  if [[ "$keep" == 0 ]]; then rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

python3 scripts/reliability/suite.py --workdir "$work" "$@" &
driver=$!
wait "$driver"
