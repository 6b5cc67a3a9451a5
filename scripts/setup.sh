#!/usr/bin/env bash
# Shared setup for scripts/run.sh and scripts/test.sh: installs what Duet needs on a fresh
# Debian/Ubuntu machine (as root) and points cargo at one shared target directory.
# Sourced, not executed.

# The Debian packages come from one list, scripts/packages.txt.
DUET_PACKAGE_LIST="$(dirname "${BASH_SOURCE[0]}")/packages.txt"

# duet_packages run|test: the packages of that group (test includes run).
duet_packages() {
  sed 's/#.*//' "$DUET_PACKAGE_LIST" | awk -v want="$1" 'NF >= 2 && ($2 == "run" || want == "test") { print $1 }'
}

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

# check_build_deps: every pkg-config module the build and the bundler look up is present, or
# stop now with the package to install (instead of failing twenty minutes into the build).
check_build_deps() {
  local missing=() pkg mods m
  while read -r pkg _ mods; do
    for m in $mods; do
      pkg-config --exists "$m" 2>/dev/null || missing+=("$m (from $pkg)")
    done
  done < <(sed 's/#.*//' "$DUET_PACKAGE_LIST" | awk 'NF >= 3')
  if ((${#missing[@]})); then
    log "the build needs pkg-config modules that are missing: ${missing[*]}"
    log "install those packages (apt-get install ...) or run this script as root, which installs them"
    return 1
  fi
}

# duet_setup [run|test]: installs the packages of that group and the toolchain, checks the build
# dependencies, and points cargo at one shared target directory.
duet_setup() {
  local group="${1:-run}"
  local packages
  mapfile -t packages < <(duet_packages "$group")
  ensure_apt "${packages[@]}"
  check_build_deps
  ensure_rust
  # One target directory, shared by every clone on this machine (CI runs in fresh clones).
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/duet/target}"
  mkdir -p "$CARGO_TARGET_DIR"
  export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
}
