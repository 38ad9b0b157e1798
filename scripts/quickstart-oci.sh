#!/usr/bin/env bash
# Quickstart, offline: start Debian's docker-registry on a free localhost port with TLS
# from a throw-away CA, push a tiny generated two-layer image to it with curl, pull it
# with `systemd-import pull-oci`, and show the result. Everything lives in a temporary
# directory that is removed at the end.
#
# Needs root (the pull restores file ownership), a release build and the Debian
# packages docker-registry, openssl, curl, tar, gzip (as installed by .ci/run):
#
#   cargo build --release
#   sudo scripts/quickstart-oci.sh
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=$PWD/target/release/systemd-import
die() { echo "quickstart: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$BIN" ] || die "build first: cargo build --release"
for tool in docker-registry openssl curl tar gzip sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install docker-registry openssl curl tar gzip coreutils)"
done
# shellcheck source=scripts/local-registry.sh
. scripts/local-registry.sh

LR_DIR=$(mktemp -d /tmp/quickstart-oci.XXXXXX)
trap 'lr_stop_registry; rm -rf "$LR_DIR"' EXIT

echo "== Starting docker-registry with TLS"
lr_start_registry
echo "registry at https://$LR_REGISTRY (CA $LR_CA)"

echo "== Building a tiny image"
base=$LR_DIR/rootfs-base top=$LR_DIR/rootfs-top
mkdir -p "$base/etc" "$base/usr/bin" "$top/etc" "$top/usr/bin"
printf 'ID=quickstart\nPRETTY_NAME="pull-oci quickstart"\n' >"$base/etc/os-release"
echo base >"$base/etc/hostname"
printf '#!/bin/sh\necho "hello from an OCI image"\n' >"$base/usr/bin/hello"
chmod 755 "$base/usr/bin/hello"
echo hello >"$top/etc/hostname"               # replaces the base layer's file
: >"$top/usr/bin/.wh.hello"                     # a whiteout: removes /usr/bin/hello
printf '#!/bin/sh\necho "hello, layered"\n' >"$top/usr/bin/greet"
chmod 755 "$top/usr/bin/greet"
for layer in base top; do
    tar --numeric-owner --owner=0 --group=0 -C "$LR_DIR/rootfs-$layer" -cf "$LR_DIR/$layer.tar" .
    gzip -n -k "$LR_DIR/$layer.tar"
done
case $(uname -m) in
    x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; i?86) arch=386 ;; *) arch=$(uname -m) ;;
esac
cat >"$LR_DIR/config.json" <<EOF
{"architecture":"$arch","os":"linux",
 "config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["/usr/bin/greet"],"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["$(lr_diff_id "$LR_DIR/base.tar")","$(lr_diff_id "$LR_DIR/top.tar")"]}}
EOF

echo "== Pushing it as $LR_REGISTRY/quickstart/hello:latest"
lr_push_image quickstart/hello latest "$LR_DIR/config.json" "$LR_DIR/base.tar.gz" "$LR_DIR/top.tar.gz"

echo "== systemd-import pull-oci"
mkdir "$LR_DIR/machines"
env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" \
    "$BIN" pull-oci --image-root="$LR_DIR/machines" "$LR_REGISTRY/quickstart/hello:latest"

echo "== Result in the image root"
(cd "$LR_DIR/machines" && find . | sort)
echo "== hello/etc/hostname"
cat "$LR_DIR/machines/hello/etc/hostname"
echo "== hello.nspawn"
cat "$LR_DIR/machines/hello.nspawn"
[ "$(cat "$LR_DIR/machines/hello/etc/hostname")" = hello ] || die "unexpected image content"
[ ! -e "$LR_DIR/machines/hello/usr/bin/hello" ] || die "the whiteout was not applied"
echo "== Done (everything is removed on exit)"
