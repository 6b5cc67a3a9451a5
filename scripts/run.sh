#!/usr/bin/env bash
# Runs Duet on its embedded default. Today that is the matching/signaling server on
# http://127.0.0.1:8787 (WebSocket at /ws); extra arguments go to duet-server (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
duet_setup
log "building duet-server (release)"
cargo build --release --locked -p duet-server
exec "$CARGO_TARGET_DIR/release/duet-server" "$@"
