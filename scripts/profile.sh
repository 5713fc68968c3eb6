#!/usr/bin/env bash
# Where the time goes: `perf record` (CPU-clock sampling, which works where hardware counters do
# not) over `sfcdc tail` and over `sfcdc run`, each reading the same stream of EVENTS order change
# events from EARLIEST out of one `sfcdc emulator` process, then a table of the samples by part
# (TLS, h2/tonic/prost framing, Avro decode, JSON rendering, rules and lookups, the store, the
# allocator, the kernel, ...), from scripts/profile_table.py.
#
#   scripts/profile.sh [EVENTS (100000)]
#
# Three runs: `tail --format json > /dev/null`, `tail --format none`, and `sfcdc run` (SQLite,
# no fulfilment URL so no worker: only ingest is measured) until its checkpoint reaches the last event. Needs perf
# (Debian's linux-perf) and a release build (built here unless $SFCDC_BIN names one). Not part of
# the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
if [ -n "${SFCDC_BIN:-}" ]; then
  bin="$SFCDC_BIN"
else
  cargo build --quiet --release --bin sfcdc
  bin="$PWD/target/release/sfcdc"
fi
work="$(mktemp -d)"
trap 'kill "${emu:-0}" "${svc:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

source scripts/emulated-run.sh
start_emulator "$bin" "$events" "$work"
record() { perf record -q -e cpu-clock -F 1999 -g -o "$work/$1.data" -- "${@:2}"; }

echo "profile: $events events; perf $(perf version | awk '{print $3}')"
record tail-json "$bin" tail "$channel" --from earliest --count "$events" >/dev/null
record tail-none "$bin" tail "$channel" --from earliest --count "$events" --format none

# sfcdc run, ingest only, until the checkpoint holds the channel's last event.
last="$(last_replay_position "$work")"
db="sqlite://$work/run.db"
SFCDC_CHANNELS="$channel" SFCDC_REPLAY_PRESET=earliest SFCDC_DATABASE_URL="$db" \
  SFCDC_ADMIN_ADDR=off \
  perf record -q -e cpu-clock -F 1999 -g -o "$work/run.data" -- "$bin" run 2>"$work/run.err" &
svc=$!
started=$(date +%s.%N)
wait_for_checkpoint "$bin" "$db" "$last" "$svc" "$work/run.err" 0.5
ended=$(date +%s.%N)
# Stop the service perf started (perf's own child), not any other `sfcdc run` on the machine.
pkill -TERM -P "$svc" || true
wait "$svc" || true
echo "sfcdc run caught up to replay position $last in $(echo "$ended - $started" | bc) s (checked every 0.5 s)"

for run in tail-json tail-none run; do
  perf report -i "$work/$run.data" --no-children --sort dso,sym --stdio -q -g none 2>/dev/null \
    >"$work/$run.txt" || true
done
python3 scripts/profile_table.py "$work/tail-json.txt" "$work/tail-none.txt" "$work/run.txt"
# PROFILE_KEEP=DIR keeps each run's perf data and report there.
if [ -n "${PROFILE_KEEP:-}" ]; then
  mkdir -p "$PROFILE_KEEP" && cp "$work"/*.data "$work"/*.txt "$PROFILE_KEEP"/
fi
