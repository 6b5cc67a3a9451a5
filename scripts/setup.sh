#!/usr/bin/env bash
# Shared setup for scripts/run.sh and scripts/test.sh: installs what Duet needs on a fresh
# Debian/Ubuntu machine (as root) and points cargo at one shared target directory.
# Sourced, not executed.

# Debian packages the build and the tests need (more arrive with the media and desktop crates).
DUET_APT_PACKAGES=(ca-certificates curl git build-essential pkg-config
  libvpx-dev libopus-dev libasound2-dev libclang-dev nasm)
# What the browser interoperability tests need: Debian's Chromium (playwright-core drives it; no
# browser download) and Node.js when the machine has none.
DUET_TEST_APT_PACKAGES=(chromium)

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

duet_setup() {
  ensure_apt "${DUET_APT_PACKAGES[@]}"
  ensure_rust
  # One target directory, shared by every clone on this machine (CI runs in fresh clones).
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/duet/target}"
  mkdir -p "$CARGO_TARGET_DIR"
  export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
}
