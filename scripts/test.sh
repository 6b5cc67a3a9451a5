#!/usr/bin/env bash
# Runs the whole Duet test suite: formatting, lints, unit, integration and end-to-end tests
# (headless clients, Chromium, the desktop window through tauri-driver, calls over capped links in
# network namespaces), the desktop packages, and a short fuzzing pass over the protocol parser.
# Installs what it needs, and prints how long each stage took at the end (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

stage_names=()
stage_seconds=()
stage_started=$SECONDS
current_stage=""
# stage NAME: ends the running stage (recording its time) and starts NAME.
stage() {
  if [ -n "$current_stage" ]; then
    stage_names+=("$current_stage")
    stage_seconds+=($((SECONDS - stage_started)))
  fi
  current_stage="$1"
  stage_started=$SECONDS
  [ -z "$1" ] || log "stage: $1"
}
print_stage_table() {
  local status=$?
  local failed="$current_stage"
  stage ""
  printf '\n%-10s %8s\n' stage seconds >&2
  local i total=0
  for i in "${!stage_names[@]}"; do
    printf '%-10s %8d\n' "${stage_names[$i]}" "${stage_seconds[$i]}" >&2
    total=$((total + stage_seconds[i]))
  done
  printf '%-10s %8d\n' total "$total" >&2
  if [ "$status" -ne 0 ]; then log "FAILED in stage: ${failed:-?} (exit $status)"; fi
}
trap print_stage_table EXIT

stage install
duet_setup test
ensure_node
log "npm ci (tests/browser: playwright-core)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
ensure_tauri_cli
ensure_tauri_driver

stage lint
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

stage tests
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc

stage packages
log "desktop packages: build the .deb and .rpm, install the .deb, launch it from its menu entry"
bash scripts/check-package.sh

if [ "${DUET_SKIP_FUZZ:-0}" != 1 ]; then
  stage fuzz
  log "fuzzing the protocol parser briefly"
  bash scripts/fuzz.sh "${DUET_FUZZ_SECONDS:-20}"
fi
stage ""
log "all tests passed"
