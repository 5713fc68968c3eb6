# Sourced by scripts/profile.sh and scripts/instructions.sh (not run on its own): one
# `sfcdc emulator` process holding a stream of order change events, the environment that points
# `sfcdc` at it, and a way to wait until `sfcdc run` has committed the stream's last event.
#
#   start_emulator BIN EVENTS WORKDIR   starts it (pid in $emu) and exports SFCDC_PUBSUB_ENDPOINT,
#                                       SFCDC_CA_CERT, the client-credentials login and SFCDC_LOG;
#                                       sets $channel and $rest
#   last_replay_position WORKDIR        the channel's last replay id, as a number
#   wait_for_checkpoint BIN DB_URL LAST PID ERRFILE SECONDS
#                                       polls, every SECONDS, until the checkpoint of the
#                                       `sfcdc run` on DB_URL (process PID, stderr in ERRFILE)
#                                       reaches LAST; stops the script if that process ends first

start_emulator() {
  local bin="$1" events="$2" work="$3" line grpc
  "$bin" emulator --grpc-addr 127.0.0.1:0 --rest-addr 127.0.0.1:0 --ca-out "$work/ca.pem" \
    --bulk "$events" --fault api-limit=5000000 >"$work/emulator.out" 2>"$work/emulator.err" &
  emu=$!
  for _ in $(seq 600); do grep -q ready "$work/emulator.out" 2>/dev/null && break; sleep 0.5; done
  line="$(head -1 "$work/emulator.out")"
  grpc="$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$line")"
  rest="$(sed -E 's/.* rest=([^ ]+).*/\1/' <<<"$line")"
  export SFCDC_PUBSUB_ENDPOINT="$grpc" SFCDC_CA_CERT="$work/ca.pem" SF_AUTH=client-credentials \
    SF_LOGIN_URL="$rest" SF_CLIENT_ID=sfcdc-demo SF_CLIENT_SECRET=sfcdc-demo-secret SFCDC_LOG=warn
  channel=/data/OrderChangeEvent
}

last_replay_position() {
  curl -sf --cacert "$1/ca.pem" "$rest/emulator/stats" | python3 -c \
    "import json,sys; print(int(json.load(sys.stdin)['last_replay_ids']['$channel'], 16))"
}

# Where the checkpoint on DB_URL stands (0 before the first commit).
checkpoint_position() {
  SFCDC_DATABASE_URL="$2" "$1" channels --format json 2>/dev/null | python3 -c \
    "import json,sys
rows = json.load(sys.stdin)
hexes = [r.get('checkpoint') or '' for r in rows]
print(max([int(h[:16], 16) for h in hexes if len(h) >= 16 and h.isalnum()] + [0]))" 2>/dev/null \
    || echo 0
}

wait_for_checkpoint() {
  local bin="$1" db="$2" last="$3" pid="$4" err="$5" every="$6"
  while :; do
    sleep "$every"
    [ "$(checkpoint_position "$bin" "$db")" -ge "$last" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "sfcdc run stopped:"; tail -20 "$err"; exit 1; }
  done
}
