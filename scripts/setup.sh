#!/usr/bin/env bash
# Shared setup for scripts/run.sh and scripts/test.sh: installs what Duet needs on a fresh
# Debian/Ubuntu machine (as root) and points cargo at one shared target directory.
# Sourced, not executed.

# Debian packages the build and the app need: codecs, ALSA, WebKitGTK for the Tauri window, the
# tray library (loaded at run time), and Xvfb so the app can run on a machine without a display.
DUET_APT_PACKAGES=(ca-certificates curl git build-essential pkg-config
  libvpx-dev libopus-dev libasound2-dev libclang-dev nasm
  libwebkit2gtk-4.1-dev libayatana-appindicator3-1 dbus xvfb xauth)
# What the tests add: Debian's Chromium (playwright-core drives it; no browser download),
# WebKitWebDriver (tauri-driver drives the desktop window through it), ImageMagick for
# screenshots, X utilities and python3-xlib (closing a window as a window manager would), and
# Node.js when the machine has none.
DUET_TEST_APT_PACKAGES=(chromium webkit2gtk-driver imagemagick x11-utils python3-xlib)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
      log "missing packages: ${missing[*]} (run as root, or install them first)"
      return 1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_rust() {
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
  if ! command -v cargo >/dev/null; then
    log "installing the Rust toolchain (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ensure_apt nodejs npm
  fi
}

# tauri-driver: the WebDriver front for Tauri apps (about 40 s to build, once).
ensure_tauri_driver() {
  if ! command -v tauri-driver >/dev/null; then
    log "installing tauri-driver 2.1.0"
    cargo install tauri-driver --version 2.1.0 --locked --quiet
  fi
}

# tauri-cli (npm, prebuilt) for bundling the .deb/.rpm.
ensure_tauri_cli() {
  ensure_node
  if [ ! -x node_modules/.bin/tauri ]; then
    log "npm install (tauri-cli, pinned in package.json)"
    npm install --no-audit --no-fund --loglevel=error
  fi
}

duet_setup() {
  ensure_apt "${DUET_APT_PACKAGES[@]}"
  ensure_rust
  # One target directory, shared by every clone on this machine (CI runs in fresh clones).
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/duet/target}"
  mkdir -p "$CARGO_TARGET_DIR"
  export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
}
