#!/usr/bin/env bash
# Benchmark: five "machines" (fresh image roots, one after the other) pull the same image
# with systemd-import pull-oci through a pull-through cache (Debian's docker-registry with
# `proxy: remoteurl:`) in front of an origin docker-registry, configured the way a fleet
# is: a registries.conf mirror (`--registry-config=DIR`). Prints the bytes the origin
# served (blobs and manifests, from its log) against the image's size, and the wall time
# of each pull (the first fills the cache, the later ones are served from it). Then the
# request pattern behind those bytes, from both registries' logs: the blob requests the
# origin answered (HEAD and GET, and from whom) and the ones the cache had from us during
# the first pull (GET, HEAD, Range), per blob.
#
# Run as root on Debian 12 with docker-registry, openssl, curl, tar, gzip installed,
# after `cargo build --release`:
#
#   bench/fleet.sh                  # 256 MiB image (4 layers of noise)
#   BENCH_MB=8 bench/fleet.sh       # a small one (a smoke test of the script)
#   BENCH_DIR=/dev/shm bench/fleet.sh
#   BENCH_KEEP=1 bench/fleet.sh     # keep the work directory (both registries' logs)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/registry-bench.sh
. bench/registry-bench.sh

MB=${BENCH_MB:-256}
MACHINES=5
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/fleet-bench.XXXXXX")
CACHE_PID=
cleanup() {
    [ -n "$CACHE_PID" ] && { kill "$CACHE_PID" 2>/dev/null || true; wait "$CACHE_PID" 2>/dev/null || true; }
    lr_stop_registry
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "bench: kept $WORK (origin log: origin/registry.log, cache log: cache/log)" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# The origin, logging every request (for the bytes it serves).
LR_DIR=$WORK/origin
mkdir -p "$LR_DIR"
lr_start_logged_registry

# The image: 4 gzip layers of noise (they do not compress: bytes on the wire = size).
echo "bench: building a ${MB} MiB image" >&2
diff_ids=
layers=()
for i in 1 2 3 4; do
    lr_noise_layer "$i" $((MB * 1024 * 1024 / 4))
done
lr_push_noise_image
IMAGE_BYTES=$(cat "${layers[@]}" "$WORK/config.json" | wc -c)

# The pull-through cache (same CA; it trusts the origin through SSL_CERT_FILE).
CACHE_PORT=$((20000 + RANDOM % 40000))
mkdir -p "$WORK/cache"
cat >"$WORK/cache/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $WORK/cache/storage
http:
  addr: 127.0.0.1:$CACHE_PORT
  tls:
    certificate: $LR_DIR/tls/server.pem
    key: $LR_DIR/tls/server.key
proxy:
  remoteurl: https://$LR_REGISTRY
EOF
SSL_CERT_FILE=$LR_CA docker-registry serve "$WORK/cache/config.yml" >"$WORK/cache/log" 2>&1 &
CACHE_PID=$!
for _ in $(seq 100); do
    curl -sf --cacert "$LR_CA" "https://127.0.0.1:$CACHE_PORT/v2/" >/dev/null && break
    sleep 0.1
done

# The fleet's configuration: the cache mirrors the origin.
mkdir -p "$WORK/config/etc/containers"
cat >"$WORK/config/etc/containers/registries.conf" <<EOF
[[registry]]
location = "$LR_REGISTRY"
[[registry.mirror]]
location = "127.0.0.1:$CACHE_PORT"
EOF


# blob_requests LOG METHOD AGENT FROM: how many blob requests with METHOD whose User-Agent
# starts with AGENT ("" for any) LOG's registry answered, counting from line FROM.
blob_requests() {
    tail -n +"$4" "$1" | grep 'msg="response completed"' | grep "http.request.method=$2 " |
        grep -E 'http.request.uri="?/v2/[^ ]*/blobs/' |
        grep -c "http.request.useragent=\"\?$3" || true
}
# Our blob requests with a Range header reach the cache's log only as a 206 status.
partial_answers() {
    tail -n +"$2" "$1" | grep 'msg="response completed"' | grep -c 'http.response.status=206' || true
}

before=$(lr_served_bytes)
origin_from=$(($(wc -l <"$LR_DIR/registry.log") + 1))
for m in $(seq "$MACHINES"); do
    [ "$m" = 1 ] && cache_from=$(($(wc -l <"$WORK/cache/log") + 1))
    root=$WORK/machine$m
    mkdir -p "$root"
    start=$(date +%s.%N)
    env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" "$BIN" pull-oci --image-root="$root" \
        --registry-config="$WORK/config" "$LR_REGISTRY/bench/image:latest" image \
        >"$WORK/pull$m.log" 2>&1 || { cat "$WORK/pull$m.log" >&2; die "pull $m failed"; }
    end=$(date +%s.%N)
    grep -q "Fetched layer .* from mirror https://127.0.0.1:$CACHE_PORT" "$WORK/pull$m.log" ||
        die "pull $m did not go through the cache"
    awk -v m="$m" -v a="$start" -v b="$end" 'BEGIN { printf "machine %d: %.2f s wall\n", m, b - a }'
    rm -rf "$root"
    # The cache stores a blob in the background after streaming it: let it finish.
    if [ "$m" = 1 ]; then
        sleep 2
        cache_to=$(($(wc -l <"$WORK/cache/log") + 1))
    fi
done
served=$(( $(lr_served_bytes) - before ))
awk -v i="$IMAGE_BYTES" -v s="$served" -v n="$MACHINES" 'BEGIN {
    printf "image: %d bytes (layers + config); the origin served %d bytes (%.2f copies) for %d machines\n", i, s, s / i, n }'

# Where the second copy comes from: the request pattern behind the bytes.
blobs=$(( ${#layers[@]} + 1 ))
first=$WORK/cache/first.log
sed -n "${cache_from},$((cache_to - 1))p" "$WORK/cache/log" >"$first"
printf 'machine 1 asked the cache for %d blobs: %d GET, %d HEAD, %d answered 206 (a Range request)\n' \
    "$blobs" "$(blob_requests "$first" GET systemd-import/ 1)" \
    "$(blob_requests "$first" HEAD systemd-import/ 1)" "$(partial_answers "$first" 1)"
ours=$(( $(blob_requests "$LR_DIR/registry.log" GET systemd-import/ "$origin_from") +
    $(blob_requests "$LR_DIR/registry.log" HEAD systemd-import/ "$origin_from") ))
printf 'during the pulls the origin answered %d blob GET and %d blob HEAD (%d of them to systemd-import, the rest to the cache)\n' \
    "$(blob_requests "$LR_DIR/registry.log" GET "" "$origin_from")" \
    "$(blob_requests "$LR_DIR/registry.log" HEAD "" "$origin_from")" "$ours"
