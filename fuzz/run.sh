#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each with libFuzzer, on the stable
# toolchain: coverage instrumentation (sancov) without a sanitizer. One process, niced, so the
# machine stays usable. Prints, per target, the inputs executed and the crashes found; exits
# non-zero if any target crashed.
#
#   fuzz/run.sh [SECONDS] [TARGET...]        default: 60 seconds, every target
#
# Inputs the fuzzer finds go to target/fuzz/corpus/<target>/ (not checked in); crashes to
# target/fuzz/artifacts/<target>/. Replay one with
#   target/fuzz/<triple>/debug/<target> FILE
# and, once fixed, copy it into fuzz/corpus/<target>/ so `cargo test -p mesh-fuzz` keeps it.
# Environment: FUZZ_MAX_LEN (largest input, default 16384), FUZZ_BUILD_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
all_targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/libfuzzer/Cargo.toml | grep -v '^mesh-fuzz-libfuzzer$')
targets="${*:-$all_targets}"
for t in $targets; do
    grep -qx "$t" <<<"$all_targets" || { echo "unknown target \`$t\`; known: $(echo $all_targets)" >&2; exit 2; }
done

triple=$(rustc -vV | sed -n 's/^host: //p')
out=target/fuzz
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" --cfg fuzzing -Cdebug-assertions -Cforce-frame-pointers=yes"

echo "== building $(wc -w <<<"$targets") fuzz targets ($triple, no sanitizer)"
# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="$flags" nice -n 10 cargo build --quiet \
    --manifest-path fuzz/libfuzzer/Cargo.toml --target "$triple" --target-dir "$out" \
    -j "${FUZZ_BUILD_JOBS:-2}" --bins

summary=()
crashed=0
for t in $targets; do
    corpus="$out/corpus/$t"
    artifacts="$out/artifacts/$t"
    log="$out/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    before=$(ls "$artifacts" | wc -l)
    echo "== $t: ${seconds}s"
    status=0
    nice -n 10 "$out/$triple/debug/$t" "$corpus" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-16384}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$runs" ]; then
        # A crash ends the run before the final stats: take the last progress line.
        runs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    crashes=$(( $(ls "$artifacts" | wc -l) - before ))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    [ "$crashes" -gt 0 ] && crashed=1
    line=$(printf '%-28s %12s inputs  %2d crash(es)  corpus %s' "$t" "${runs:-0}" "$crashes" "$(ls "$corpus" | wc -l)")
    if [ "$crashes" -gt 0 ]; then
        line+="  -> $artifacts/ (log $log)"
        grep -m1 -E "panicked at|deadly signal|ERROR: libFuzzer" "$log" | sed 's/^/    /' || true
    fi
    summary+=("$line")
done

echo
echo "== fuzzing summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$crashed"
