#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of fuzz/, one after the other, each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target comes from the first argument, else $FUZZ_SECONDS, else 60. TARGETs default to
# every target in fuzz/Cargo.toml. Extra libFuzzer flags can be given in $FUZZ_ARGS (for example
# FUZZ_ARGS="-max_len=4096"), the sanitizer in $FUZZ_SANITIZER (address, the default, or none).
# fuzz/dict/<target>.dict, when present, gives libFuzzer the tokens of that input format.
#
# Works on a stable toolchain: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer,
# sanitizer coverage options), which RUSTC_BOOTSTRAP=1 unlocks on stable; the sanitizer runtimes
# ship with the standard library. Builds go to fuzz/target, apart from the project's target/.
# fuzz/ is a member of the workspace: its library holds the target bodies, and the libFuzzer
# binaries need its `libfuzzer` feature, which every cargo fuzz call here passes.
# The committed seeds in fuzz/corpus/<target>/ are read, never written: what the fuzzer learns
# goes to fuzz/target/corpus/<target>/ and is kept for the next run. A crash is written to
# fuzz/artifacts/<target>/ and stops this script with the command that replays it.
# Once fixed, copy the input to fuzz/regressions/<target>/ so `cargo test` replays it for good.
# Not part of CI: .ci/run does not call it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    # The names of the [[bin]] sections of fuzz/Cargo.toml.
    mapfile -t targets < <(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 }
        bin && /^name = / { gsub(/"/, "", $3); print $3 }' fuzz/Cargo.toml)
fi
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "Installing cargo-fuzz…" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# -O: optimised, -a: with debug assertions and overflow checks (an overflow is a finding).
build_flags=(-O -a --sanitizer "$sanitizer" --features libfuzzer --target-dir fuzz/target)

cargo fuzz build "${build_flags[@]}"

for t in "${targets[@]}"; do
    echo "=== fuzzing $t for ${seconds}s" >&2
    # New inputs go to the working corpus under fuzz/target; the committed seeds are only read.
    mkdir -p "fuzz/target/corpus/$t"
    dict=()
    [[ -f "fuzz/dict/$t.dict" ]] && dict=(-dict="fuzz/dict/$t.dict")
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "${build_flags[@]}" "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
        "${dict[@]}" ${FUZZ_ARGS:-}
done
