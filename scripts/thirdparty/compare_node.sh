#!/usr/bin/env bash
# The same TLS stream read by the reference Node client (pozil's salesforce-pubsub-api-client,
# which decodes every event) and by `sfcdc tail --format none` (which decodes and counts; the JSON
# printer, `--format json` to /dev/null, is shown too, timed from outside), all
# from EARLIEST, alternated ROUNDS times in one run against one `sfcdc emulator` process holding
# EVENTS order change events. Prints each run's events/s, CPU seconds (user+system) and peak RSS,
# then the medians and the ratios. Not part of the test suite: it installs the Node client from
# npm into a temporary directory and needs a release build.
#
#   scripts/thirdparty/compare_node.sh [EVENTS (100000)] [ROUNDS (3)]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
events="${1:-100000}"
rounds="${2:-3}"
work="$(mktemp -d)"
trap 'kill "${emu:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
command -v node >/dev/null || { echo "compare_node: SKIPPED: node is not installed" >&2; exit 0; }
# SFCDC_BIN: a built sfcdc to measure (sfcdc bench --report passes itself); otherwise a release
# build of this tree.
if [ -n "${SFCDC_BIN:-}" ]; then
  bin="$SFCDC_BIN"
else
  cargo build --quiet --release --bin sfcdc --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/sfcdc"
fi
cp "$here"/package.json "$here"/pubsub_pozil_count.mjs "$work"/
(cd "$work" && npm install --silent --no-audit --no-fund >/dev/null)

"$bin" emulator --grpc-addr 127.0.0.1:0 --rest-addr 127.0.0.1:0 --ca-out "$work/ca.pem" \
  --bulk "$events" >"$work/emulator.out" 2>"$work/emulator.err" &
emu=$!
for _ in $(seq 600); do grep -q ready "$work/emulator.out" 2>/dev/null && break; sleep 0.5; done
line="$(head -1 "$work/emulator.out")"
grpc_url="$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$line")"
grpc="$(sed -E 's/.*grpc=https:\/\/127\.0\.0\.1:([0-9]+).*/localhost:\1/' <<<"$line")"
rest="$(sed -E 's/.* rest=([^ ]+).*/\1/' <<<"$line")"

# One measured run: its events/s line, CPU seconds and peak RSS (GNU time's %U+%S and %M).
measure() {
  local name="$1"; shift
  : >"$work/err"
  /usr/bin/time -f "%U %S %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    echo "$name failed:"; head -30 "$work/err"; exit 1; }
  local rate cpu rss
  rate="$(grep -oE '[0-9]+ events/s' "$work/out" | grep -oE '^[0-9]+')"
  read -r u s m <"$work/time"
  cpu="$(echo "$u + $s" | bc)"
  rss="$(echo "scale=1; $m / 1024" | bc)"
  echo "$name $rate $cpu $rss" >>"$work/results"
  printf '  %-5s %9s events/s  %6s s CPU  %7s MiB peak RSS\n' "$name" "$rate" "$cpu" "$rss"
}

echo "compare_node: $events events, $rounds rounds, $(nproc) cores"
for r in $(seq "$rounds"); do
  echo "round $r"
  measure node env NODE_EXTRA_CA_CERTS="$work/ca.pem" node "$work/pubsub_pozil_count.mjs" \
    "$grpc" "$rest" /data/OrderChangeEvent "$events"
  measure sfcdc env -i SFCDC_PUBSUB_ENDPOINT="$grpc_url" SFCDC_CA_CERT="$work/ca.pem" \
    SF_AUTH=client-credentials SF_LOGIN_URL="$rest" SF_CLIENT_ID=sfcdc-demo \
    SF_CLIENT_SECRET=sfcdc-demo-secret SFCDC_LOG=warn \
    "$bin" tail /data/OrderChangeEvent --from earliest --count "$events" --format none
  # The JSON printer too (its lines to /dev/null), timed from outside.
  start=$(date +%s.%N)
  /usr/bin/time -f "%U %S %M" -o "$work/time" env -i SFCDC_PUBSUB_ENDPOINT="$grpc_url" \
    SFCDC_CA_CERT="$work/ca.pem" SF_AUTH=client-credentials SF_LOGIN_URL="$rest" \
    SF_CLIENT_ID=sfcdc-demo SF_CLIENT_SECRET=sfcdc-demo-secret SFCDC_LOG=warn \
    "$bin" tail /data/OrderChangeEvent --from earliest --count "$events" >/dev/null
  end=$(date +%s.%N)
  read -r u s m <"$work/time"
  printf '  %-5s %9.0f events/s  %6s s CPU  %7s MiB peak RSS  (tail --format json > /dev/null)\n' \
    json "$(echo "$events / ($end - $start)" | bc -l)" "$(echo "$u + $s" | bc)" "$(echo "scale=1; $m / 1024" | bc)"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {n: [statistics.median(float(r[i]) for r in rows if r[0] == n) for i in (1, 2, 3)] for n in ("node", "sfcdc")}
(nr, nc, nm), (sr, sc, sm) = med["node"], med["sfcdc"]
print(f"median  node {nr:.0f} events/s, {nc:.2f} s CPU, {nm:.1f} MiB; sfcdc {sr:.0f} events/s, {sc:.2f} s CPU, {sm:.1f} MiB")
print(f"ratio   sfcdc/node: {sr / nr:.1f}x events/s, {nc / sc:.1f}x less CPU per event, {nm / sm:.1f}x less memory")
print(f"RESULT node_eps={nr:.0f} node_cpu={nc:.3f} node_mib={nm:.1f} sfcdc_eps={sr:.0f} sfcdc_cpu={sc:.3f} sfcdc_mib={sm:.1f}")
PY
