#!/usr/bin/env bash
# Benchmark (issue 15, link-limited cases): the same image pulled over a slow link by
#   * systemd-import pull-oci,
#   * skopeo copy docker://… oci:… followed by umoci unpack,
#   * podman pull (its own storage below the work directory),
# each tool's wall time printed against the least the link allows; pull-oci runs twice, with
# its default ranged fetch of big layers and with `--download-ranges=1` (one stream per
# layer). Two links:
#   (a) tbf:   registry and pullers in a network namespace of their own whose loopback is
#              shaped with `tc qdisc … tbf rate BENCH_RATE` (default 400mbit): the bound is
#              the image's bytes / the rate;
#   (b) nginx: the registry behind nginx with `limit_rate BENCH_LIMIT` (default 20m, nginx's
#              MiB per second) per connection: the bound is the largest layer / the limit
#              (when every layer has a connection of its own), the image's bytes / the limit
#              for a puller that fetches one blob at a time. nginx limits each request
#              and lets its first second's worth through at once (a 16 MiB Range request
#              is barely limited);
#   (c) conn:  the registry behind bench/conn-limit.py, a TCP relay limiting each
#              connection to BENCH_LIMIT with a 256 KiB burst (a CDN's per-connection
#              throttle): same bounds as (b).
#
# The image: four gzip layers of noise (bytes on the wire = their size): one of BENCH_MB
# MiB (default 256) and three of a quarter of that.
#
# Run as root on Debian 12 with docker-registry, nginx (nginx-light), skopeo, umoci, podman,
# iproute2 (tc, with the tbf qdisc), util-linux (unshare), openssl, curl, tar, gzip installed,
# after `cargo build --release`:
#
#   bench/links.sh                          # both links, 256 MiB largest layer
#   BENCH_MB=8 bench/links.sh               # a small image (a smoke test of the script)
#   BENCH_LINKS=tbf bench/links.sh          # one link only (tbf or nginx)
#   BENCH_RATE=1gbit BENCH_LIMIT=50m bench/links.sh
#   BENCH_DIR=/dev/shm bench/links.sh       # work directory elsewhere (default /var/tmp)
#   BENCH_MB=32 BENCH_LINKS=nginx BENCH_RANGE_SIZE=4M bench/links.sh
#                                           # pull-oci's --download-range-size= (a smoke run
#                                           # whose layers are big enough to be fetched in parts)
#   BENCH_PEERS=no bench/links.sh           # pull-oci only (default "skopeo podman")
#   BENCH_BIN=/tmp/old/systemd-import bench/links.sh
#                                           # another build of ours (before/after a change)
#
# Each pull-oci row also gives its CPU time (user + sys) and, on the conn link, the TCP
# connections it opened to the relay (conn-limit.py logs each one).
#
# Everything runs in a new network namespace (the script starts itself again under
# `unshare --net`), so the shaping never touches the host's loopback.
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (unshare, tc, and the unpackers restore ownership)"
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
BIN=${BENCH_BIN:-$REPO_ROOT/target/release/systemd-import}
[ -x "$BIN" ] || die "build first: cargo build --release"
PEERS=${BENCH_PEERS-skopeo podman}
[ "$PEERS" = no ] && PEERS=
has_peer() { case " $PEERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for peer in $PEERS; do
    case $peer in skopeo | podman) ;; *) die "BENCH_PEERS: skopeo, podman (or no)" ;; esac
done

if [ "${1:-}" != --in-netns ]; then
    tools=(docker-registry nginx tc ip unshare openssl curl tar gzip python3)
    has_peer skopeo && tools+=(skopeo umoci)
    has_peer podman && tools+=(podman)
    [ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
    for tool in "${tools[@]}"; do
        command -v "$tool" >/dev/null || die "'$tool' not found"
    done
    exec unshare --net -- "$0" --in-netns
fi

# --- Inside the network namespace --------------------------------------------------------
# shellcheck source=scripts/local-registry.sh
. "$REPO_ROOT/scripts/local-registry.sh"
ip link set lo up

MB=${BENCH_MB:-256}
RATE=${BENCH_RATE:-400mbit}
LIMIT=${BENCH_LIMIT:-20m}
LINKS=${BENCH_LINKS:-tbf nginx conn}
RANGE_SIZE=${BENCH_RANGE_SIZE:-}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/links-bench.XXXXXX")
NGINX_PID=
CONN_PID=
cleanup() {
    [ -n "$CONN_PID" ] && { kill "$CONN_PID" 2>/dev/null || true; wait "$CONN_PID" 2>/dev/null || true; }
    tc qdisc del dev lo root 2>/dev/null || true
    [ -n "$NGINX_PID" ] && { kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
    lr_stop_registry
    rm -rf "$WORK"
}
trap cleanup EXIT

# tc's rate (bit, kbit, mbit, gbit; SI) and nginx's size (k, m: binary) in bytes per second.
rate_bytes() {
    awk -v r="$1" 'BEGIN {
        n = r + 0; u = substr(r, length(n "") + 1)
        m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : (u == "bit" || u == "") ? 1 : -1
        if (m < 0) { print "bad rate " r > "/dev/stderr"; exit 1 }
        printf "%d\n", n * m / 8 }'
}
limit_bytes() {
    awk -v l="$1" 'BEGIN {
        n = l + 0; u = tolower(substr(l, length(n "") + 1))
        m = (u == "m") ? 1048576 : (u == "k") ? 1024 : (u == "") ? 1 : -1
        if (m < 0) { print "bad limit " l > "/dev/stderr"; exit 1 }
        printf "%d\n", n * m }'
}
RATE_BYTES=$(rate_bytes "$RATE")
LIMIT_BYTES=$(limit_bytes "$LIMIT")

# --- Registry and image (set up before any shaping) --------------------------------------
LR_DIR=$WORK/registry
mkdir -p "$LR_DIR"
lr_start_registry || die "docker-registry did not start"
mkdir -p "$WORK/certs.d"
cp "$LR_CA" "$WORK/certs.d/ca.crt" # skopeo's and podman's --cert-dir layout

echo "bench: building the image (largest layer $MB MiB)" >&2
diff_ids=
layers=()
for i in 1 2 3 4; do
    size=$((i == 1 ? MB * 1048576 : MB * 1048576 / 4))
    lr_noise_layer "$i" "$size" $([ "$i" = 4 ] && echo hostname)
done
lr_push_noise_image
IMAGE_BYTES=$(cat "${layers[@]}" "$WORK/config.json" | wc -c)
LARGEST_BYTES=$(stat -c %s "${layers[0]}")
rm -f "${layers[@]}"

# --- The pullers -----------------------------------------------------------------------------
# timed NAME CMD…: run CMD (its output to $WORK/NAME.log), print its wall time in seconds.
timed() {
    local name=$1 start end
    shift
    sync
    start=$(date +%s.%N)
    "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; die "$name failed"; }
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f\n", b - a }'
}

# pull_all LINK HOST: every tool pulls HOST/bench/image:latest; one result line per tool.
pull_all() {
    local link=$1 host=$2 ref=$2/bench/image:latest t s u name ranges
    for ranges in default 1; do
        local opts=()
        [ -n "$RANGE_SIZE" ] && opts+=("--download-range-size=$RANGE_SIZE")
        name=pull-oci
        [ "$ranges" = default ] || { opts+=("--download-ranges=$ranges"); name="pull-oci/1"; }
        mkdir -p "$WORK/ours"
        local conns_before conns=
        conns_before=$(connections)
        t=$(timed ours env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" \
            /usr/bin/time -f 'cpu %U %S' -o "$WORK/ours.time" \
            "$BIN" pull-oci "${opts[@]}" --image-root="$WORK/ours" "$ref" image)
        [ -f "$WORK/ours/image/data/hostname" ] || die "pull-oci produced no image"
        rm -rf "$WORK/ours"
        [ "$link" = conn ] && conns=", $(($(connections) - conns_before)) connections"
        echo "$link $name $t ($(grep -c '^Fetching layer .* in [0-9]* parts' "$WORK/ours.log" || true) layers in parts, CPU $(awk '/^cpu/ { printf "%.2f", $2 + $3 }' "$WORK/ours.time") s$conns)" >>"$WORK/results"
    done
    [ -z "$PEERS" ] && return

    if has_peer skopeo; then
        s=$(timed skopeo skopeo copy --quiet --src-cert-dir "$WORK/certs.d" \
            "docker://$ref" "oci:$WORK/layout:latest")
        u=$(timed umoci umoci unpack --image "$WORK/layout:latest" "$WORK/bundle")
        [ -f "$WORK/bundle/rootfs/data/hostname" ] || die "umoci produced no rootfs"
        rm -rf "$WORK/layout" "$WORK/bundle"
        echo "$link skopeo+umoci $(awk -v s="$s" -v u="$u" 'BEGIN { printf "%.2f", s + u }') ($s + $u)" >>"$WORK/results"
    fi

    if has_peer podman; then
        lr_podman_args "$WORK/podman"
        t=$(timed podman "${LR_PODMAN[@]}" pull --quiet --cert-dir "$WORK/certs.d" "docker://$ref")
        lr_podman_reset "$WORK/podman"
        echo "$link podman $t" >>"$WORK/results"
    fi
}

# connections: how many connections conn-limit.py accepted so far (0 on the other links).
connections() {
    [ -f "$WORK/conn-limit.log" ] || { echo 0; return; }
    grep -c '^connection' "$WORK/conn-limit.log" || true
}

# wait_for_v2 PORT: until the registry answers through the limiter on 127.0.0.1:PORT.
wait_for_v2() {
    for _ in $(seq 100); do
        curl -sf --cacert "$LR_CA" "https://127.0.0.1:$1/v2/" >/dev/null && return
        sleep 0.1
    done
}

: >"$WORK/results"
for link in $LINKS; do
    case $link in
    tbf)
        echo "bench: link tbf: loopback shaped to $RATE" >&2
        # The burst must hold loopback's largest packet (64 KiB MTU, and GSO bursts).
        tc qdisc add dev lo root tbf rate "$RATE" burst 1mb latency 100ms
        pull_all tbf "$LR_REGISTRY"
        tc qdisc del dev lo root
        ;;
    nginx)
        echo "bench: link nginx: limit_rate $LIMIT per connection" >&2
        NGINX_PORT=$((20000 + RANDOM % 40000))
        lr_nginx_conf "$WORK/nginx" 256 "
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $LR_DIR/tls/server.pem;
        ssl_certificate_key $LR_DIR/tls/server.key;
        client_max_body_size 0;
        location / {
            proxy_pass https://$LR_REGISTRY;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            # Buffered (limit_rate does not bind on an unbuffered proxied response: a smoke
            # run saw 40 MB/s on one connection with 'proxy_buffering off'), in memory only.
            proxy_buffering on;
            proxy_max_temp_file_size 0;
            proxy_ssl_trusted_certificate $LR_CA;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            limit_rate $LIMIT;
        }
    }"
        nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
        NGINX_PID=$!
        wait_for_v2 "$NGINX_PORT"
        pull_all nginx "127.0.0.1:$NGINX_PORT"
        kill "$NGINX_PID"
        wait "$NGINX_PID" 2>/dev/null || true
        NGINX_PID=
        ;;
    conn)
        echo "bench: link conn: $LIMIT per connection (bench/conn-limit.py)" >&2
        CONN_PORT=$((20000 + RANDOM % 40000))
        python3 "$REPO_ROOT/bench/conn-limit.py" "$CONN_PORT" "$LR_REGISTRY" "$LIMIT_BYTES" \
            >"$WORK/conn-limit.log" 2>&1 &
        CONN_PID=$!
        wait_for_v2 "$CONN_PORT"
        pull_all conn "127.0.0.1:$CONN_PORT"
        kill "$CONN_PID"
        wait "$CONN_PID" 2>/dev/null || true
        CONN_PID=
        ;;
    *) die "BENCH_LINKS: tbf, nginx, conn" ;;
    esac
done

# --- Report ------------------------------------------------------------------------------------
echo
printf 'image: %d bytes (4 layers + config), largest layer %d bytes\n' "$IMAGE_BYTES" "$LARGEST_BYTES"
awk -v bytes="$IMAGE_BYTES" -v largest="$LARGEST_BYTES" -v rate="$RATE_BYTES" -v limit="$LIMIT_BYTES" \
    -v rate_name="$RATE" -v limit_name="$LIMIT" '
    BEGIN {
        bound["tbf"] = bytes / rate
        what["tbf"] = sprintf("tbf %s: bytes / rate = %.2f s", rate_name, bytes / rate)
        bound["nginx"] = largest / limit
        what["nginx"] = sprintf("nginx limit_rate %s per connection: largest layer / limit = %.2f s (one blob at a time: %.2f s)",
            limit_name, largest / limit, bytes / limit)
        bound["conn"] = largest / limit
        what["conn"] = sprintf("conn-limit.py %s per connection: largest layer / limit = %.2f s (one blob at a time: %.2f s)",
            limit_name, largest / limit, bytes / limit)
    }
    $1 != link { link = $1; print what[link] }
    {
        rest = ""
        for (i = 4; i <= NF; i++) rest = rest " " $i
        printf "  %-14s %8.2f s  %5.2fx the bound%s\n", $2, $3, $3 / bound[link], rest
        t[link, $2] = $3
        if ($2 == "pull-oci/1" && t[link, "pull-oci"] > 0)
            printf "  pull-oci in parts is %.2fx faster than in one stream per layer\n", $3 / t[link, "pull-oci"]
    }' "$WORK/results"
