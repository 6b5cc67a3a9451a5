#!/usr/bin/env bash
# Builds the desktop packages with tauri-cli (.deb and .rpm; both offline) and checks the .deb
# the way a user meets it: its dependencies, `apt install ./duet_*.deb`, the menu entry, the app
# launched from that entry (under Xvfb: the window appears and stays up), and removal.
#
# The packages are copied to dist/ as duet_<version>_<arch>.deb and duet-<version>-1.<arch>.rpm
# (tauri-cli names them after the product name, "Duet").
# DUET_KEEP_INSTALLED=1 leaves the package installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
duet_setup
ensure_tauri_cli

log "tauri build --bundles deb,rpm (release)"
npx tauri build --bundles deb,rpm
bundle="$CARGO_TARGET_DIR/release/bundle"
version=$(sed -n 's/^ *"version": "\(.*\)",$/\1/p' tauri.conf.json | head -1)
mkdir -p dist
rm -f dist/duet_*.deb dist/duet-*.rpm
cp "$bundle/deb/Duet_${version}_amd64.deb" "dist/duet_${version}_amd64.deb"
cp "$bundle/rpm/Duet-${version}-1.x86_64.rpm" "dist/duet-${version}-1.x86_64.rpm"
deb="dist/duet_${version}_amd64.deb"
ls -l dist/

fail() { printf 'check-package: %s\n' "$*" >&2; exit 1; }

log "package metadata"
[ "$(dpkg-deb -f "$deb" Package)" = duet ] || fail "the package is not named duet"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libopus0 libvpx7 libasound2 libayatana-appindicator3-1 libwebkit2gtk-4.1-0; do
  grep -qw "$lib" <<<"$depends" || fail "Depends lacks $lib: $depends"
done
rpm_requires=$(rpm -qpR "dist/duet-${version}-1.x86_64.rpm" 2>/dev/null || true)
if command -v rpm >/dev/null; then
  for lib in opus libvpx alsa-lib; do
    grep -qw "$lib" <<<"$rpm_requires" || fail "the rpm does not require $lib"
  done
fi

log "apt install ./$deb"
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "./$deb" >/dev/null
entry=$(dpkg -L duet | grep '/usr/share/applications/.*\.desktop$' | head -1 || true)
[ -n "$entry" ] || fail "no menu entry (.desktop file) installed"
grep -q '^Name=Duet$' "$entry" || fail "menu entry without Name=Duet: $(cat "$entry")"
exec_line=$(sed -n 's/^Exec=//p' "$entry" | head -1)
icon=$(sed -n 's/^Icon=//p' "$entry" | head -1)
[ -n "$icon" ] && [ -n "$(find /usr/share/icons/hicolor -name "$icon.png" | head -1)" ] || fail "menu icon ${icon:-?} not installed"
command -v "${exec_line%% *}" >/dev/null || fail "menu entry runs ${exec_line%% *}, which is not on PATH"

log "launch from the menu entry: $exec_line"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p test-artifacts
# As a fresh user: own config dir, own embedded-server port, no devices (the app must say so
# and still run).
HOME="$scratch" XDG_CONFIG_HOME="$scratch/config" DUET_EMBEDDED_ADDR="127.0.0.1:$((20000 + RANDOM % 20000))" \
  xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- bash -c '
    eval "$1" >"$2/app.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      xwininfo -root -tree 2>/dev/null | grep -q "\"Duet\"" && break
      sleep 0.2
    done
    xwininfo -root -tree | grep -q "\"Duet\"" || { echo "no Duet window appeared"; cat "$2/app.log"; exit 1; }
    sleep 3
    kill -0 "$pid" || { echo "the app exited"; cat "$2/app.log"; exit 1; }
    import -window root test-artifacts/installed-app.png
    kill "$pid"; wait "$pid" || true
  ' _ "$exec_line" "$scratch"
[ -f "$scratch/config/chat.duet.desktop/settings.json" ] || fail "the installed app did not create its settings file"
mode=$(stat -c %a "$scratch/config/chat.duet.desktop/settings.json")
[ "$mode" = 600 ] || fail "settings.json has mode $mode, not 600"

if [ "${DUET_KEEP_INSTALLED:-0}" != 1 ]; then
  log "apt remove duet"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 remove -y -qq duet >/dev/null
  ! command -v duet-app >/dev/null || fail "duet-app is still installed after removal"
fi
log "packages OK: $(du -h "$deb" | cut -f1) .deb, $(du -h "dist/duet-${version}-1.x86_64.rpm" | cut -f1) .rpm"
