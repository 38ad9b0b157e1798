#!/bin/sh
# Install systemd-import (Rust) in place of systemd's image transfer tools: the worker
# as systemd-pull, systemd-import, systemd-import-fs and systemd-export, the daemon
# systemd-importd, its unit, D-Bus activation file, D-Bus policy and polkit actions, and
# the client importctl, at the paths systemd uses.
#
#   scripts/install.sh [--no-build]
#
# Environment:
#   DESTDIR   staging root for packagers (default: none, i.e. the live system)
#   PREFIX    installation prefix (default /usr; systemd's own files live there)
#   BIN_DIR   where the built binaries are (default target/release)
#   CARGO     the cargo to build with (default cargo)
#
# Without --no-build it runs `cargo build --release --locked` first. With a PREFIX
# other than /usr the unit's ExecStart= and the daemon's worker path
# (SYSTEMD_PULL_PATH) are pointed at the prefix.
set -eu
cd "$(dirname "$0")/.."

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
BIN_DIR=${BIN_DIR:-target/release}
CARGO=${CARGO:-cargo}

case "${1:-}" in
    --no-build) ;;
    "") "$CARGO" build --release --locked --bins ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

libexec=$PREFIX/lib/systemd
unitdir=$PREFIX/lib/systemd/system
busdir=$PREFIX/share/dbus-1
polkitdir=$PREFIX/share/polkit-1/actions

for bin in systemd-import systemd-importd importctl; do
    [ -x "$BIN_DIR/$bin" ] || { echo "$0: $BIN_DIR/$bin not built" >&2; exit 1; }
done

bindir=$PREFIX/bin
install -d "$DESTDIR$bindir" "$DESTDIR$libexec" "$DESTDIR$unitdir" "$DESTDIR$busdir/system-services" \
    "$DESTDIR$busdir/system.d" "$DESTDIR$polkitdir"

# One worker binary under each of systemd's names (systemd has four programs here; ours
# picks its personality by the name it runs under).
for name in systemd-pull systemd-import systemd-import-fs systemd-export; do
    install -m 0755 "$BIN_DIR/systemd-import" "$DESTDIR$libexec/$name"
done
install -m 0755 "$BIN_DIR/systemd-importd" "$DESTDIR$libexec/systemd-importd"
install -m 0755 "$BIN_DIR/importctl" "$DESTDIR$bindir/importctl"

unit=$DESTDIR$unitdir/systemd-importd.service
if [ "$PREFIX" = /usr ]; then
    install -m 0644 data/systemd-importd.service "$unit"
else
    sed -e "s|^ExecStart=/usr/lib/systemd/systemd-importd|ExecStart=$libexec/systemd-importd\nEnvironment=SYSTEMD_PULL_PATH=$libexec/systemd-pull\nEnvironment=SYSTEMD_IMPORT_PATH=$libexec/systemd-import\nEnvironment=SYSTEMD_IMPORT_FS_PATH=$libexec/systemd-import-fs\nEnvironment=SYSTEMD_EXPORT_PATH=$libexec/systemd-export|" \
        data/systemd-importd.service >"$unit"
    chmod 0644 "$unit"
fi
# Bus activation starts this alias.
ln -sf systemd-importd.service "$DESTDIR$unitdir/dbus-org.freedesktop.import1.service"

install -m 0644 data/org.freedesktop.import1.service "$DESTDIR$busdir/system-services/"
install -m 0644 data/org.freedesktop.import1.conf "$DESTDIR$busdir/system.d/"
install -m 0644 data/org.freedesktop.import1.policy "$DESTDIR$polkitdir/"

echo "Installed systemd-pull, systemd-import, systemd-import-fs, systemd-export and systemd-importd in $DESTDIR$libexec, importctl in $DESTDIR$bindir."
