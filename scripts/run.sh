#!/usr/bin/env bash
# Runs the Duet desktop app on its embedded default: with no server configured it starts the
# built-in server on 127.0.0.1:8787, so a second `bash scripts/run.sh` on the same machine
# matches with the first one, and "Test call" works at once. On a machine without a display it
# runs under Xvfb (set DUET_SCREENSHOT=path.png to save what the window shows after 5 s).
# Settings live in ~/.config/chat.duet.desktop/settings.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
duet_setup
log "building the Duet app (release)"
cargo build --release --locked -p duet-app
app="$CARGO_TARGET_DIR/release/duet-app"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec "$app" "$@"
fi
log "no display: running under a virtual X display (Xvfb)"
if [ -n "${DUET_SCREENSHOT:-}" ]; then
  exec xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- bash -c \
    '"$0" "$@" & pid=$!; sleep 5; import -window root "$DUET_SCREENSHOT"; wait $pid' "$app" "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- "$app" "$@"
