#!/usr/bin/env bash
# Runs the whole Duet test suite: formatting, lints, unit, integration and end-to-end tests
# (headless clients, Chromium, the desktop window through tauri-driver), the desktop packages,
# and a short fuzzing pass over the protocol parser. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
duet_setup
ensure_apt "${DUET_TEST_APT_PACKAGES[@]}"
ensure_node
log "npm ci (tests/browser: playwright-core)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
ensure_tauri_cli
ensure_tauri_driver

started=$SECONDS
log "rustfmt"
cargo fmt --all --check
log "clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
log "tests"
cargo test --locked --workspace --all-targets
log "doc tests"
cargo test --locked --workspace --doc
log "desktop packages: build the .deb and .rpm, install the .deb, launch it from its menu entry"
bash scripts/check-package.sh
if [ "${DUET_SKIP_FUZZ:-0}" != 1 ]; then
  log "fuzzing the protocol parser briefly"
  bash scripts/fuzz.sh "${DUET_FUZZ_SECONDS:-20}"
fi
log "all tests passed in $((SECONDS - started)) s"
