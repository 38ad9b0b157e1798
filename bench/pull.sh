#!/usr/bin/env bash
# Benchmark: pull a ~1 GiB multi-layer image from a local docker-registry with
#   (a) systemd-import pull-oci, and
#   (b) skopeo copy docker://… oci:… followed by umoci unpack,
# and print wall time, CPU time (user+sys) and peak RSS of each, and the ratios.
#
# Run as root on Debian 12 with docker-registry, skopeo, umoci, time, openssl, curl, tar,
# gzip and perl installed, after `cargo build --release`:
#
#   bench/pull.sh                       # on a fresh loop-mounted ext4 (8 GiB sparse file
#                                       # under /var/tmp): registry storage and targets
#   BENCH_FS=btrfs bench/pull.sh        # a fresh btrfs instead (pull-oci: chain subvolumes)
#   BENCH_DIR=/dev/shm bench/pull.sh    # an existing directory instead (here tmpfs)
#   BENCH_RUNS=5 bench/pull.sh          # more runs (default 3; the median is reported)
#   BENCH_COLD=1 bench/pull.sh          # cold page cache: drop caches before each run
#   BENCH_SCALE=16 bench/pull.sh        # every layer 16 times smaller (a smoke run)
#   BENCH_PEERS=no bench/pull.sh        # pull-oci only
#
# The image (built once per run of this script, not timed): five gzip layers,
#   1. 40,000 small files (64 B – 4 KiB of text) in 400 directories,
#   2. 64 files of 4 MiB, half noise and half text each,
#   3. one 256 MiB file of noise (does not compress),
#   4. ten 32 MiB text files (compress to about a third),
#   5. a few changed files and whiteouts.
# about 1 GiB of tar in all. Both tools pull over HTTPS from the same registry on
# 127.0.0.1 and write to the same file system; each run starts from an empty target.
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (both unpackers restore ownership)"
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
BIN=$REPO_ROOT/target/release/systemd-import
# shellcheck source=scripts/local-registry.sh
. "$REPO_ROOT/scripts/local-registry.sh"
[ -x "$BIN" ] || die "build first: cargo build --release"
for tool in docker-registry skopeo umoci openssl curl tar gzip perl sha256sum mkfs.ext4; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install docker-registry skopeo umoci openssl curl tar gzip perl coreutils)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"

RUNS=${BENCH_RUNS:-3}
FS=${BENCH_FS:-ext4}
COLD=${BENCH_COLD:-0}
SCALE=${BENCH_SCALE:-1}
PEERS=${BENCH_PEERS:-yes}
MOUNT=
IMAGE_FILE=
if [ -n "${BENCH_DIR:-}" ]; then
    BASE=$BENCH_DIR
else
    # A fresh file system on a loop device, so the host file system's state and mount
    # options (this VM's root ext4 creates small files ~20x slower than a fresh one) do
    # not decide the result. Both tools run on it.
    case $FS in ext4) mkfs=(mkfs.ext4 -q) ;; btrfs) mkfs=(mkfs.btrfs -q) ;; *) die "BENCH_FS=ext4|btrfs" ;; esac
    IMAGE_FILE=$(mktemp /var/tmp/pull-bench-fs.XXXXXX)
    truncate -s 8G "$IMAGE_FILE"
    "${mkfs[@]}" "$IMAGE_FILE" >/dev/null
    MOUNT=$(mktemp -d /var/tmp/pull-bench-mnt.XXXXXX)
    mount -o loop "$IMAGE_FILE" "$MOUNT"
    BASE=$MOUNT
fi
WORK=$(mktemp -d "$BASE/pull-bench.XXXXXX")
# rm -rf, deleting pull-oci's read-only layer subvolumes (on btrfs) first.
remove_tree() {
    if command -v btrfs >/dev/null; then
        find "$1" -maxdepth 3 -name '.oci-chain-*' -exec btrfs subvolume delete {} \; >/dev/null 2>&1 || true
    fi
    rm -rf "$1"
}
cleanup() {
    lr_stop_registry
    remove_tree "$WORK"
    if [ -n "$MOUNT" ]; then
        umount "$MOUNT" && rmdir "$MOUNT"
        rm -f "$IMAGE_FILE"
    fi
}
trap cleanup EXIT
echo "bench: working in $WORK"

# --- TLS and registry ------------------------------------------------------------------
LR_DIR=$WORK
lr_make_tls
mkdir -p "$WORK/certs.d"
cp "$LR_CA" "$WORK/certs.d/ca.crt"   # skopeo's --src-cert-dir layout
lr_start_registry || die "docker-registry did not start"
REGISTRY=$LR_REGISTRY

# --- The image -------------------------------------------------------------------------
echo "bench: generating layers"
mkdir -p "$WORK/layers"
gen() { # gen KIND DIR: fill DIR with the content of one layer
    perl -e '
        use strict; use warnings;
        my ($kind, $dir, $scale) = @ARGV;
        srand(42 + length $kind);
        my @words = map { join "", map { chr(97 + int rand 26) } 1 .. (2 + int rand 9) } 1 .. 4096;
        sub text { my $n = shift; my $s = ""; $s .= $words[int rand @words] . (rand() < 0.1 ? "\n" : " ") while length $s < $n; substr($s, 0, $n) }
        sub noise { my $n = shift; open(my $r, "<", "/dev/urandom") or die; read($r, my $b, $n); $b }
        sub put { my ($p, $d) = @_; open(my $f, ">", $p) or die "$p: $!"; print $f $d; close $f }
        if ($kind eq "small") {
            for my $d (0 .. int(400 / $scale) - 1) {
                -d "$dir/usr/share/d$d" or mkdir "$dir/usr/share/d$d" or die;
                put("$dir/usr/share/d$d/f$_", text(64 + int rand 4032)) for 0 .. 99;
            }
        } elsif ($kind eq "mixed") {
            put("$dir/usr/lib/lib$_.so", noise(2 << 20) . text(2 << 20)) for 0 .. int(64 / $scale) - 1;
        } elsif ($kind eq "noise") {
            put("$dir/var/data.bin", noise(int((256 << 20) / $scale)));
        } elsif ($kind eq "text") {
            put("$dir/srv/text$_.txt", text(int((32 << 20) / $scale))) for 0 .. 9;
        } elsif ($kind eq "top") {
            put("$dir/etc/hostname", "bench\n");
            put("$dir/usr/share/d0/.wh.f1", "");
            put("$dir/usr/share/d1/.wh..wh..opq", "");
        }
    ' "$1" "$2" "$SCALE"
}
LAYER_KINDS=(small mixed noise text top)
declare -a DIFF_IDS LAYER_FILES
for i in "${!LAYER_KINDS[@]}"; do
    kind=${LAYER_KINDS[$i]}
    dir=$WORK/layers/$kind
    mkdir -p "$dir/etc" "$dir/usr/share/d0" "$dir/usr/share/d1" "$dir/usr/lib" "$dir/var" "$dir/srv"
    gen "$kind" "$dir"
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@1600000000 \
        -C "$dir" -cf "$WORK/layers/$kind.tar" .
    rm -rf "$dir"
    gzip -6 -n -c "$WORK/layers/$kind.tar" >"$WORK/layers/$kind.tar.gz"
    DIFF_IDS[$i]=$(lr_diff_id "$WORK/layers/$kind.tar")
    LAYER_FILES[$i]=$WORK/layers/$kind.tar.gz
    printf 'bench: layer %s: %s MiB tar, %s MiB gzip\n' "$kind" \
        $(($(stat -c %s "$WORK/layers/$kind.tar") >> 20)) $(($(stat -c %s "${LAYER_FILES[$i]}") >> 20))
    rm "$WORK/layers/$kind.tar"
done

echo "bench: pushing to $REGISTRY"
diff_ids_json=$(printf '"%s",' "${DIFF_IDS[@]}")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "${diff_ids_json%,}" >"$WORK/config.json"
lr_push_image bench/image latest "$WORK/config.json" "${LAYER_FILES[@]}"
rm -rf "$WORK/layers"

# --- Timed runs ----------------------------------------------------------------------------
# time_run NAME LOG CMD…: run under /usr/bin/time -v, append "wall cpu rss_kib" to
# $WORK/result.NAME.
time_run() {
    local name=$1 log=$2
    shift 2
    sync
    if [ "$COLD" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
    if ! /usr/bin/time -v -o "$WORK/time.out" "$@" >"$log" 2>&1; then
        cat "$log" >&2
        die "$name failed"
    fi
    awk -v out="$WORK/result.$name" '
        /Elapsed \(wall clock\)/ { n = split($NF, t, ":"); wall = (n == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
        /User time/ { user = $NF } /System time/ { sys = $NF }
        /Maximum resident set size/ { rss = $NF }
        END { printf "%.2f %.2f %d\n", wall, user + sys, rss >> out }' "$WORK/time.out"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
    echo "bench: run $run/$RUNS: pull-oci"
    mkdir "$WORK/ours"
    time_run ours "$WORK/ours.log" env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" \
        "$BIN" pull-oci --image-root="$WORK/ours" "$REGISTRY/bench/image:latest" image
    [ -f "$WORK/ours/image/etc/hostname" ] || die "pull-oci produced no image"
    remove_tree "$WORK/ours"

    [ "$PEERS" = no ] && continue
    echo "bench: run $run/$RUNS: skopeo copy + umoci unpack"
    rm -rf "$WORK/layout" "$WORK/bundle"
    time_run skopeo "$WORK/skopeo.log" skopeo copy --quiet --src-cert-dir "$WORK/certs.d" \
        "docker://$REGISTRY/bench/image:latest" "oci:$WORK/layout:latest"
    time_run umoci "$WORK/umoci.log" umoci unpack --image "$WORK/layout:latest" "$WORK/bundle"
    [ -f "$WORK/bundle/rootfs/etc/hostname" ] || die "umoci produced no rootfs"
    rm -rf "$WORK/layout" "$WORK/bundle"
done

# --- Report ---------------------------------------------------------------------------------
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$2" '{ print $c }' "$WORK/result.$1" | median; }
echo
read -r ow oc orss <<<"$(col ours 1) $(col ours 2) $(col ours 3)"
cache=warm
[ "$COLD" = 1 ] && cache=cold
echo "Median of $RUNS runs; $(du -sh "$WORK/registry" | cut -f1) in the registry; file system $(findmnt -n -o FSTYPE -T "$WORK" | head -n 1); page cache $cache; scale 1/$SCALE; load average before: $LOAD_BEFORE"
if [ "$PEERS" = no ]; then
    echo "Per run (wall s, CPU s, peak RSS KiB):"
    awk '{ printf "  run %d: pull-oci %s %s %s\n", NR, $1, $2, $3 }' "$WORK/result.ours"
    printf '%-28s %10s %10s %16s\n' "" "wall (s)" "CPU (s)" "peak RSS (MiB)"
    awk -v ow="$ow" -v oc="$oc" -v orss="$orss" 'BEGIN { printf "%-28s %10.2f %10.2f %16.1f\n", "systemd-import pull-oci", ow, oc, orss / 1024 }'
    exit 0
fi
# skopeo+umoci add up per run (RSS: the larger).
paste -d' ' "$WORK/result.skopeo" "$WORK/result.umoci" |
    awk '{ printf "%.2f %.2f %d\n", $1 + $4, $2 + $5, ($3 > $6 ? $3 : $6) }' >"$WORK/result.peers"
echo "Per run (wall s, CPU s, peak RSS KiB):"
paste -d' ' "$WORK/result.ours" "$WORK/result.skopeo" "$WORK/result.umoci" |
    awk '{ printf "  run %d: pull-oci %s %s %s | skopeo %s %s %s | umoci %s %s %s\n", NR, $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
read -r pw pc prss <<<"$(col peers 1) $(col peers 2) $(col peers 3)"
read -r sw uw <<<"$(col skopeo 1) $(col umoci 1)"
awk -v ow="$ow" -v oc="$oc" -v orss="$orss" -v pw="$pw" -v pc="$pc" -v prss="$prss" \
    -v sw="$sw" -v uw="$uw" 'BEGIN {
    printf "%-28s %10s %10s %16s\n", "", "wall (s)", "CPU (s)", "peak RSS (MiB)"
    printf "%-28s %10.2f %10.2f %16.1f\n", "systemd-import pull-oci", ow, oc, orss / 1024
    printf "%-28s %10.2f %10.2f %16.1f\n", "skopeo copy + umoci unpack", pw, pc, prss / 1024
    printf "%-28s %10.2f\n", "  skopeo copy", sw
    printf "%-28s %10.2f\n", "  umoci unpack", uw
    printf "%-28s %9.2fx %9.2fx %15.2fx\n", "peers / pull-oci", pw / ow, pc / oc, prss / orss
}'
