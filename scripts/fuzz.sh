#!/usr/bin/env bash
# Fuzz the Duet protocol parsers with cargo-fuzz (libFuzzer), on the stable toolchain.
#
# Usage: scripts/fuzz.sh [SECONDS]        (default 60 seconds per target)
#
# Environment:
#   FUZZ_TARGETS    targets to run, space-separated (default: every target below)
#   FUZZ_SANITIZER  none (default) or address. `address` needs the unstable -Zsanitizer
#                   flag, so it is built with RUSTC_BOOTSTRAP=1 on the stable toolchain;
#                   it is about 5x slower and the parser crate has no unsafe code.
#   FUZZ_VERBOSE=1  stream libFuzzer's output instead of only its summary
#   CARGO_TARGET_DIR is honoured (cargo-fuzz puts the binaries under
#   $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/), so builds are reused.
#
# Seeds from fuzz/seeds/<target>/ are copied into fuzz/corpus/<target>/ (not committed),
# crashes land in fuzz/artifacts/<target>/ (not committed), and full logs in
# fuzz/target/logs/. Exits non-zero if any target crashed (or failed to build).
set -euo pipefail

DURATION="${1:-60}"
if ! [[ "$DURATION" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (SECONDS: a positive integer, default 60)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGETS="${FUZZ_TARGETS:-parse_client_frame parse_server_frame client_session}"
SANITIZER="${FUZZ_SANITIZER:-none}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
DICT="fuzz/dict/duet.dict"
LOG_DIR="fuzz/target/logs"

log() { printf '==> %s\n' "$*" >&2; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }

case "$SANITIZER" in
    none) ;;
    address | leak | memory | thread)
        # -Zsanitizer is unstable; the stable toolchain accepts it with RUSTC_BOOTSTRAP=1
        # (it ships the sanitizer runtimes for x86_64-unknown-linux-gnu).
        export RUSTC_BOOTSTRAP=1
        log "sanitizer $SANITIZER: building with RUSTC_BOOTSTRAP=1 (-Zsanitizer on stable)"
        ;;
    *)
        echo "FUZZ_SANITIZER must be none, address, leak, memory or thread (got '$SANITIZER')" >&2
        exit 2
        ;;
esac

# cargo-fuzz: use the one on PATH or in ~/.cargo/bin, else install it from crates.io.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz not found: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    run cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
log "$(cargo fuzz --version), $(rustc --version)"
log "target dir: ${CARGO_TARGET_DIR:-fuzz/target (default)}"

mkdir -p "$LOG_DIR"

log "building fuzz targets (sanitizer: $SANITIZER)"
build_start=$(date +%s)
run cargo fuzz build --sanitizer "$SANITIZER"
log "build took $(($(date +%s) - build_start)) s"

failed=()
for target in $TARGETS; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    mkdir -p "$corpus"
    if [[ -d "$seeds" ]]; then
        log "$target: copying $(find "$seeds" -type f | wc -l) seeds from $seeds into $corpus"
        cp -f "$seeds"/* "$corpus"/
    fi
    logfile="$LOG_DIR/$target.log"
    log "$target: fuzzing for $DURATION s (corpus $corpus: $(find "$corpus" -type f | wc -l) inputs; log $logfile)"
    args=(cargo fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" --
        "-max_total_time=$DURATION" "-dict=$DICT" -print_final_stats=1)
    printf '+ %s\n' "${args[*]}" >&2
    status=0
    if [[ "${FUZZ_VERBOSE:-0}" == 1 ]]; then
        "${args[@]}" 2>&1 | tee "$logfile" || status=$?
    else
        "${args[@]}" >"$logfile" 2>&1 || status=$?
    fi
    # libFuzzer's closing status line and final stats.
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::|^Done [0-9]+ runs' "$logfile" >&2 || true
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        echo "!!! $target FAILED (exit $status); full output in $logfile" >&2
        # The panic message (up to the backtrace), or libFuzzer/sanitizer error lines
        # (timeout, out-of-memory, deadly signal, ASan report).
        awk '/panicked at/ { p = 1 } /^stack backtrace:/ { p = 0 } p' "$logfile" | head -n 40 >&2
        grep -E '^==[0-9]+== ?ERROR|^SUMMARY:' "$logfile" | head -n 5 >&2 || true
        artifact=$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$logfile" | tail -n 1)
        if [[ -n "$artifact" && -f "$artifact" ]]; then
            echo "!!! crashing input ($(wc -c <"$artifact") bytes): $artifact" >&2
            head -c 600 "$artifact" | cat -v >&2
            echo >&2
            echo "!!! reproduce with: cargo fuzz run --sanitizer $SANITIZER $target $artifact" >&2
        else
            grep -v '# Uses:' "$logfile" | tail -n 30 >&2
        fi
    else
        log "$target: no crash in $DURATION s"
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
log "all targets ran ${DURATION}s without a crash: $TARGETS"
