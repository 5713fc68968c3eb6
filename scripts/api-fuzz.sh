#!/usr/bin/env bash
# Fuzzes the admin JSON API against its own OpenAPI document with schemathesis (PyPI).
#
#   scripts/api-fuzz.sh [--quick] [--examples N] [--seed N] [--random] [--keep]
#   scripts/api-fuzz.sh --install-only    (only install schemathesis; CI does it while compiling)
#
# Starts `sfcdc emulator` and `sfcdc run` (SQLite in a scratch directory, both tokens set, no
# worker, so nothing changes behind the fuzzer's back), makes demo data (bulk-generated orders
# with approvals, so there are jobs), fetches /openapi.json with the operator token, then runs
# schemathesis twice:
#
#   1. invalid requests (--mode negative), then
#   2. every kind of request (--mode all).
#
# Each run must pass every schemathesis check (no 5xx, statuses, content types and bodies as
# documented, invalid input refused, no answer without a token, ...), and then the store's own:
# every job, delivery, quarantined event or checkpoint that changed was the target of a request
# answered 2xx, and the audit trail gained an action that went through only for such a request
# (scripts/api_fuzz_state.py). So no request answered with an error changed anything.
#
# Bounded: a fixed number of examples per operation (--examples, 25 by default, 10 with --quick)
# and deterministic generation (--random: a random search from --seed instead), under a time
# limit per run. Prints the number of requests each run made.
# Builds the debug binary unless $SFCDC_BIN names one; installs schemathesis into
# target/api-fuzz-venv on first use. Needs python3 with venv and pip, and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

examples=25
seed=20261206
keep=0
install_only=0
generation=(--generation-deterministic)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) examples=10 ;;
    --examples) examples="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --random) generation=() ;;
    --keep) keep=1 ;;
    --install-only) install_only=1 ;;
    *) echo "api-fuzz.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

SCHEMATHESIS_VERSION=4.32.5
venv="$PWD/target/api-fuzz-venv"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
[[ "$install_only" = 1 ]] && exit 0

if [[ -z "${SFCDC_BIN:-}" ]]; then
  cargo build --quiet --bin sfcdc
  SFCDC_BIN="$PWD/target/debug/sfcdc"
fi
[[ "$SFCDC_BIN" = /* ]] || SFCDC_BIN="$PWD/$SFCDC_BIN"

work="$(mktemp -d "${TMPDIR:-/tmp}/sfcdc-api-fuzz-XXXXXX")"
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "$keep" == 1 || "$status" != 0 ]]; then
    echo "api-fuzz.sh: logs and reports kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM HUP

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The emulator, on ephemeral ports.
env -i PATH="$PATH" HOME="$HOME" SFCDC_LOG=warn "$SFCDC_BIN" emulator \
  --grpc-addr 127.0.0.1:0 --rest-addr 127.0.0.1:0 --ca-out "$work/ca.pem" --keepalive 1s \
  >"$work/emulator.out" 2>"$work/emulator.log" &
pids+=($!)
for _ in $(seq 600); do
  grep -q "ready: grpc=" "$work/emulator.out" 2>/dev/null && break
  sleep 0.1
done
ready="$(grep -o 'ready: grpc=[^ ]* rest=[^ ]*' "$work/emulator.out")" || { echo "api-fuzz.sh: the emulator did not start" >&2; exit 1; }
grpc="${ready#ready: grpc=}"; grpc="${grpc%% *}"
rest="${ready##* rest=}"

# Demo data: orders with approvals, made before the service starts.
curl -fsS --cacert "$work/ca.pem" -X POST "$rest/emulator/bulk" -H 'Content-Type: application/json' \
  -d '{"count": 40}' >/dev/null

# The service: both roles, no worker.
admin_token="api-fuzz-operator-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
read_token="api-fuzz-viewer-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
port="$(free_port)"
base="http://127.0.0.1:$port"
db="sqlite://$work/sfcdc.db"
run_env=(
  PATH="$PATH" HOME="$HOME"
  SFCDC_PUBSUB_ENDPOINT="$grpc" SFCDC_CA_CERT="$work/ca.pem"
  SF_AUTH=client-credentials SF_LOGIN_URL="$rest" SF_CLIENT_ID=sfcdc-demo SF_CLIENT_SECRET=sfcdc-demo-secret
  SFCDC_CHANNELS=/data/OrderChangeEvent SFCDC_REPLAY_PRESET=earliest
  SFCDC_DATABASE_URL="$db" SFCDC_ADMIN_ADDR="127.0.0.1:$port"
  SFCDC_ADMIN_TOKEN="$admin_token" SFCDC_READ_TOKEN="$read_token"
  SFCDC_LOG=warn SFCDC_LOG_FORMAT=text
)
env -i "${run_env[@]}" "$SFCDC_BIN" run >"$work/run.out" 2>"$work/run.log" &
pids+=($!)
for _ in $(seq 600); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" == 200 ]] && break
  sleep 0.1
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" == 200 ]] || { echo "api-fuzz.sh: sfcdc run is not ready; see $work/run.log" >&2; exit 1; }
# Let the service take in the demo data: jobs exist, and the checkpoints stand still.
positions() { curl -fsS -H "Authorization: Bearer $read_token" "$base/channels" | python3 -c 'import json,sys; print([c["checkpoint"] for c in json.load(sys.stdin)])'; }
for _ in $(seq 100); do
  n="$(curl -fsS -H "Authorization: Bearer $read_token" "$base/jobs?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
  [[ "$n" -gt 0 ]] && break
  sleep 0.2
done
last=""
for _ in $(seq 30); do
  now="$(positions)"
  [[ "$now" == "$last" ]] && break
  last="$now"
  sleep 1
done
curl -fsS -H "Authorization: Bearer $admin_token" "$base/openapi.json" -o "$work/openapi.json"

snapshot() {
  local t="$1"
  {
    curl -fsS -H "Authorization: Bearer $read_token" "$base/jobs?limit=1000"
    echo
    curl -fsS -H "Authorization: Bearer $read_token" "$base/deliveries?limit=1000"
    echo
    curl -fsS -H "Authorization: Bearer $read_token" "$base/quarantine?state=all&limit=1000"
    echo
    curl -fsS -H "Authorization: Bearer $read_token" "$base/channels" \
      | python3 -c 'import json,sys; print(json.dumps([(c["channel"], c["checkpoint"]) for c in json.load(sys.stdin)]))'
  } >"$t"
}

fuzz() {
  local mode="$1" name="$2"
  # From the scratch directory, so schemathesis's cache stays out of the work tree.
  (cd "$work" && timeout 600 "$venv/bin/st" --config-file "$repo/scripts/api-fuzz.toml" run "$work/openapi.json" --url "$base" \
    -H "Authorization: Bearer $admin_token" \
    --mode "$mode" --checks all --phases examples,coverage,fuzzing \
    --max-examples "$examples" --seed "$seed" "${generation[@]}" --workers 1 \
    --request-timeout 10 --no-color \
    --report junit,har --report-dir "$work/$name" >"$work/$name.out" 2>&1)
  local status=$?
  local requests
  requests="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["log"]["entries"]))' "$(ls "$work/$name"/har-*.json | head -1)" 2>/dev/null || echo "?")"
  tail -n 25 "$work/$name.out"
  echo "api-fuzz.sh: $name: $requests requests, schemathesis exit $status"
  return "$status"
}

audit() { curl -fsS -H "Authorization: Bearer $read_token" "$base/audit?limit=1000" >"$1"; }

# Each run: schemathesis's checks, then the store's: no row changed but by a request answered
# 2xx, and no action recorded as done but for one.
checked_run() {
  local mode="$1" name="$2"
  snapshot "$work/$name.before"
  audit "$work/$name.audit-before"
  fuzz "$mode" "$name" || { echo "api-fuzz.sh: FAILED: see $work/$name.out" >&2; return 1; }
  snapshot "$work/$name.after"
  audit "$work/$name.audit-after"
  python3 scripts/api_fuzz_state.py "$work/$name.before" "$work/$name.after" \
    "$(ls "$work/$name"/har-*.json | head -1)" "$work/$name.audit-before" "$work/$name.audit-after" \
    || { echo "api-fuzz.sh: FAILED: a request answered with an error changed the store" >&2; return 1; }
}

checked_run negative invalid
checked_run all all
echo "api-fuzz.sh: passed"
echo "api-fuzz: 2 passed, 0 failed"
