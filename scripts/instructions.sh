#!/usr/bin/env bash
# Counts the instructions `sfcdc run` spends on ingest, with callgrind: a figure that, unlike
# events/s or CPU seconds, does not drift with what else the machine (or its host) runs, so two
# builds can be compared in a noisy hour.
#
#   scripts/instructions.sh [EVENTS (20000)] [BINARY...]
#
# Each BINARY (default: the release build, built here) runs `sfcdc run` under
# `valgrind --tool=callgrind` on a fresh SQLite file, from EARLIEST, with no fulfilment URL (so no
# worker: ingest alone), against one `sfcdc emulator` process holding EVENTS order change events
# (the first binary's emulator, or $SFCDC_EMULATOR_BIN), until its checkpoint reaches the last
# event. Under valgrind the service is by far the slower side, so its batches are always full and
# the count repeats from run to run to within a fraction of a percent. Startup (migrations, the
# TLS handshake, the first schema) is included: compare counts over the same EVENTS.
# Prints each binary's total and instructions per event. Needs valgrind (Debian's valgrind).
# Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-20000}"
shift || true
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
bins=("$@")
if [ "${#bins[@]}" -eq 0 ]; then
  cargo build --quiet --release --bin sfcdc
  bins=("$PWD/target/release/sfcdc")
fi
emulator_bin="${SFCDC_EMULATOR_BIN:-${bins[0]}}"
work="$(mktemp -d)"
trap 'kill "${emu:-0}" "${svc:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

source scripts/emulated-run.sh
start_emulator "$emulator_bin" "$events" "$work"
last="$(last_replay_position "$work")"

echo "instructions: sfcdc run over $events events; $(valgrind --version)"
n=0
for bin in "${bins[@]}"; do
  n=$((n + 1))
  db="sqlite://$work/run-$n.db"
  out="$work/callgrind-$n.out"
  SFCDC_CHANNELS="$channel" SFCDC_REPLAY_PRESET=earliest SFCDC_DATABASE_URL="$db" \
    SFCDC_ADMIN_ADDR=off \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run 2>"$work/run-$n.err" &
  svc=$!
  wait_for_checkpoint "$bin" "$db" "$last" "$svc" "$work/run-$n.err" 1
  # valgrind runs the service itself: SIGTERM stops it gracefully and callgrind writes its counts.
  kill -TERM "$svc"
  wait "$svc" || true
  total="$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
  python3 -c "t=$total; n=$events; print(f'{\"$bin\"}: {t:,} instructions, {t/n:,.0f} per event')"
done
