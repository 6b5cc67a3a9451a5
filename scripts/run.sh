#!/usr/bin/env bash
# Runs Duet on its embedded default. Until the desktop app lands that is duet-server on
# http://127.0.0.1:8787: open that address in two browser tabs (the browser client) and press
# Start in both, or point `duet call` at ws://127.0.0.1:8787/ws. Extra arguments go to
# duet-server (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
duet_setup
log "building duet-server (release)"
cargo build --release --locked -p duet-server
exec "$CARGO_TARGET_DIR/release/duet-server" "$@"
