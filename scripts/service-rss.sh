#!/usr/bin/env bash
# RSS of `sfcdc run` over time, with the emulator in its own process: one run of
# `sfcdc bench --service-only` per event count (SQLite, worker on, from EARLIEST; past a million
# events the emulator is topped up a million at a time and keeps ten minutes of events), each
# run's samples to target/service-rss/rss-<N>.csv, then one plot of them all to
# docs/service-rss.png (matplotlib from PyPI, installed into target/plot-venv on first use).
#
#   scripts/service-rss.sh [EVENTS...]        (default: 1000000)
#   scripts/service-rss.sh 1000000 10000000   (worker on: the 1.5 million jobs of ten million
#                                               events take well over an hour on 2 cores)
#   NO_WORKER=1 scripts/service-rss.sh 10000000   (ingest alone, about 15 minutes here)
#
# Each run appends to the plot the runs already in target/service-rss. Not part of the test
# suite. Settings of the service pass through: MALLOC_* and SFCDC_CACHE_*.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(1000000)
cargo build --quiet --release --bin sfcdc
out=target/service-rss
mkdir -p "$out"
flags=() suffix=""
if [ -n "${NO_WORKER:-}" ]; then flags=(--no-worker) suffix="-noworker"; fi
for n in "${counts[@]}"; do
  target/release/sfcdc bench --service-only --backlog "$n" "${flags[@]}" --rss-csv "$out/rss-$n$suffix.csv"
done
csvs=("$out"/rss-*.csv)
venv=target/plot-venv
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'matplotlib==3.10.*'
fi
"$venv/bin/python" scripts/plot_rss.py docs/service-rss.png "${csvs[@]}"
