#!/usr/bin/env bash
# Checks the emulator against third-party clients, unmodified: pozil's Node Pub/Sub client (OAuth
# client credentials and SOAP username-password login), a Python Pub/Sub client built like
# forcedotcom's official example (grpcio + avro, with its bitmap decoder), and the simple-salesforce
# REST client (query_all over several pages, get, update, a bad field, describe, create, a
# collection update, API usage). Not part of the default test run: it installs packages from npm
# and PyPI into a temporary directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
work="$(mktemp -d)"
trap 'kill "${emu:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --quiet --manifest-path "$root/Cargo.toml"
cp "$here"/package.json "$here"/pubsub_pozil.mjs "$here"/pubsub_python.py "$here"/rest_simple_salesforce.py "$work"/
(cd "$work" && npm install --silent --no-audit --no-fund >/dev/null)
python3 -m venv "$work/venv" && "$work/venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$work/venv/bin/python" -m grpc_tools.protoc -I"$root/proto" --python_out="$work" --grpc_python_out="$work" "$root/proto/pubsub_api.proto"

"$root/target/debug/sfcdc" emulator --grpc-addr 127.0.0.1:0 --rest-addr 127.0.0.1:0 --ca-out "$work/ca.pem" \
  --bulk 40 >"$work/emulator.out" 2>"$work/emulator.err" &
emu=$!
for _ in $(seq 50); do grep -q ready "$work/emulator.out" 2>/dev/null && break; sleep 0.2; done
line="$(head -1 "$work/emulator.out")"
grpc="$(sed -E 's/.*grpc=https:\/\/127\.0\.0\.1:([0-9]+).*/localhost:\1/' <<<"$line")"
rest="$(sed -E 's/.* rest=([^ ]+).*/\1/' <<<"$line")"
# A schema change mid-stream, then more events: clients must follow each event's schema id.
curl -sf --cacert "$work/ca.pem" -H 'content-type: application/json' -d '{"kind":"schema_change"}' "$rest/emulator/faults" >/dev/null
curl -sf --cacert "$work/ca.pem" -H 'content-type: application/json' -d '{"count":10}' "$rest/emulator/bulk" >/dev/null

for auth in client-credentials username-password; do
  n=$(cd "$work" && NODE_EXTRA_CA_CERTS="$work/ca.pem" timeout 60 node pubsub_pozil.mjs "$grpc" "$rest" /data/OrderChangeEvent 50 "$auth" | grep -c changeType)
  echo "pozil ($auth): decoded $n/50 events"; [ "$n" = 50 ]
done
n=$(cd "$work" && timeout 60 "$work/venv/bin/python" pubsub_python.py "$grpc" "$rest" "$work/ca.pem" /data/OrderChangeEvent 50 | grep -c '"type"')
echo "python grpcio+avro: decoded $n/50 events"; [ "$n" = 50 ]

# Enough orders for query_all to page (2,000 records a page).
curl -sf --cacert "$work/ca.pem" -H 'content-type: application/json' -d '{"count":8000}' "$rest/emulator/bulk" >/dev/null
(cd "$work" && timeout 120 "$work/venv/bin/python" rest_simple_salesforce.py "$rest" "$work/ca.pem")
echo "third-party clients: OK"
