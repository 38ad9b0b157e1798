#!/usr/bin/env bash
# Benchmark: pull an image from a local docker-registry with
#   (a) systemd-import pull-oci,
#   (b) skopeo copy docker://… oci:… followed by umoci unpack,
#   (c) podman pull (storage of its own below the work directory, emptied before each run),
# and print wall time, CPU time (user+sys) and peak RSS of each, and the ratios.
#
# Run as root on Debian 12 with docker-registry, skopeo, umoci, podman, time, openssl,
# curl, tar, gzip and perl installed (and mmdebstrap for BENCH_IMAGE=debian), after
# `cargo build --release`:
#
#   bench/pull.sh                       # on a fresh loop-mounted ext4 (8 GiB sparse file
#                                       # under /var/tmp): registry storage and targets
#   BENCH_FS=btrfs bench/pull.sh        # a fresh btrfs instead (pull-oci: chain subvolumes)
#   BENCH_DIR=/dev/shm bench/pull.sh    # an existing directory instead (here tmpfs)
#   BENCH_RUNS=5 bench/pull.sh          # more runs (default 3; the median is reported)
#   BENCH_COLD=1 bench/pull.sh          # cold page cache: drop caches before each run
#   BENCH_SCALE=16 bench/pull.sh        # every layer 16 times smaller (a smoke run)
#   BENCH_PEERS=skopeo bench/pull.sh    # the peers to time (default "skopeo podman";
#                                       # "no" or empty: pull-oci only)
#   BENCH_IMAGE=debian bench/pull.sh    # a Debian bookworm minbase image of one gzip layer
#                                       # (built with mmdebstrap once, cached under /var/tmp)
#
# The synthetic image (the default; built once per run of this script, not timed): five
# gzip layers,
#   1. 40,000 small files (64 B – 4 KiB of text) in 400 directories,
#   2. 64 files of 4 MiB, half noise and half text each,
#   3. one 256 MiB file of noise (does not compress),
#   4. ten 32 MiB text files (compress to about a third),
#   5. a few changed files and whiteouts.
# about 1 GiB of tar in all. The debian image: one layer of about 120 MB of tar (49 MB
# gzip, 6,700 entries), like the registry's debian:bookworm. All tools pull over HTTPS
# from the same registry on 127.0.0.1 and write to the same file system; each run starts
# from an empty target.
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (both unpackers restore ownership)"
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
BIN=$REPO_ROOT/target/release/systemd-import
# shellcheck source=scripts/local-registry.sh
. "$REPO_ROOT/scripts/local-registry.sh"
[ -x "$BIN" ] || die "build first: cargo build --release"
RUNS=${BENCH_RUNS:-3}
FS=${BENCH_FS:-ext4}
COLD=${BENCH_COLD:-0}
SCALE=${BENCH_SCALE:-1}
PEERS=${BENCH_PEERS-skopeo podman}
[ "$PEERS" = no ] && PEERS=
IMAGE=${BENCH_IMAGE:-synthetic}
case $IMAGE in synthetic | debian) ;; *) die "BENCH_IMAGE=synthetic|debian" ;; esac
has_peer() { case " $PEERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for peer in $PEERS; do
    case $peer in skopeo | podman) ;; *) die "BENCH_PEERS: skopeo, podman (or no)" ;; esac
done

tools=(docker-registry openssl curl tar gzip perl sha256sum mkfs.ext4)
has_peer skopeo && tools+=(skopeo umoci)
has_peer podman && tools+=(podman)
[ "$IMAGE" = debian ] && tools+=(mmdebstrap)
[ "$FS" = btrfs ] && tools+=(mkfs.btrfs btrfs)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install docker-registry skopeo umoci podman mmdebstrap openssl curl tar gzip perl coreutils btrfs-progs)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
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
    if [ -d "$WORK/podman" ]; then lr_podman_reset "$WORK/podman"; fi
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
synthetic_layers() {
    echo "bench: generating layers"
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
}

# debian_layer: one gzip layer of a Debian bookworm minbase tree, like the registry's
# debian:bookworm (one layer, about 120 MB of tar). Built once with mmdebstrap (from the
# Debian mirror, with the security updates) and kept in $DEBIAN_CACHE with its DiffID:
# later runs only push it. The merged-usr hook makes /usr merged the way the official
# image has it without installing the usrmerge package (which would pull in perl, 50 MB
# more). /dev is left empty, as in images; members are named without "./".
DEBIAN_CACHE=${BENCH_DEBIAN_CACHE:-/var/tmp/pull-bench-debian-bookworm}
debian_layer() {
    if [ ! -s "$DEBIAN_CACHE/layer.tar.gz" ] || [ ! -s "$DEBIAN_CACHE/diff_id" ]; then
        echo "bench: building the debian layer with mmdebstrap (once, into $DEBIAN_CACHE)"
        local tmp
        tmp=$(mktemp -d /var/tmp/pull-bench-debian.XXXXXX)
        mmdebstrap --quiet --mode=root --variant=minbase \
            --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr bookworm "$tmp/root" \
            >"$tmp/mmdebstrap.log" 2>&1 || { cat "$tmp/mmdebstrap.log" >&2; rm -rf "$tmp"; die "mmdebstrap failed"; }
        find "$tmp/root/dev" -mindepth 1 -delete
        (cd "$tmp/root" && ls -A | tar --numeric-owner --sort=name -cf "$tmp/layer.tar" -T -)
        lr_diff_id "$tmp/layer.tar" >"$tmp/diff_id"
        gzip -6 -n -c "$tmp/layer.tar" >"$tmp/layer.tar.gz"
        mkdir -p "$DEBIAN_CACHE"
        mv "$tmp/diff_id" "$tmp/layer.tar.gz" "$DEBIAN_CACHE/"
        rm -rf "$tmp"
    fi
    DIFF_IDS=("$(cat "$DEBIAN_CACHE/diff_id")")
    LAYER_FILES=("$DEBIAN_CACHE/layer.tar.gz")
    printf 'bench: debian layer: %s MiB gzip\n' $(($(stat -c %s "${LAYER_FILES[0]}") >> 20))
}

declare -a DIFF_IDS LAYER_FILES
mkdir -p "$WORK/layers"
case $IMAGE in
synthetic)
    synthetic_layers
    CONFIG='{"Env":["PATH=/usr/bin"],"Cmd":["/bin/sh"]}'
    CHECK=etc/hostname
    ;;
debian)
    debian_layer
    CONFIG='{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["bash"]}'
    CHECK=etc/debian_version
    ;;
esac

echo "bench: pushing to $REGISTRY"
diff_ids_json=$(printf '"%s",' "${DIFF_IDS[@]}")
printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$CONFIG" "${diff_ids_json%,}" >"$WORK/config.json"
lr_push_image bench/image latest "$WORK/config.json" "${LAYER_FILES[@]}"
rm -rf "$WORK/layers"

# --- Timed runs ----------------------------------------------------------------------------
# time_run NAME LOG CMD…: run under /usr/bin/time -v, append "wall cpu rss_kib steal" to
# $WORK/result.NAME (steal: CPU seconds the host gave to others meanwhile).
time_run() {
    local name=$1 log=$2
    shift 2
    # Deleted btrfs subvolumes (the previous tool's tree, podman's reset) are cleaned up
    # by a kernel thread after `btrfs subvolume delete` returns: wait for it, so that no
    # tool's run pays for the cleanup of the one before. (The sync commits and wakes that
    # thread, which otherwise waits for the next periodic commit, up to 30 s.)
    if [ "$(stat -f -c %T "$WORK")" = btrfs ]; then
        btrfs filesystem sync "$WORK" >/dev/null
        btrfs subvolume sync "$WORK" >/dev/null
        # and commit what the cleanup left for the next transaction (freeing the extents).
        btrfs filesystem sync "$WORK" >/dev/null
    fi
    sync
    if [ "$COLD" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
    # CPU time the hypervisor gave to others while the run wanted it (the steal column
    # of /proc/stat, in clock ticks): a run with much of it is the host's noise.
    local steal_before
    steal_before=$(awk '/^cpu / { print $9 }' /proc/stat)
    if ! /usr/bin/time -v -o "$WORK/time.out" "$@" >"$log" 2>&1; then
        cat "$log" >&2
        die "$name failed"
    fi
    awk -v out="$WORK/result.$name" -v hz="$(getconf CLK_TCK)" -v before="$steal_before" \
        -v after="$(awk '/^cpu / { print $9 }' /proc/stat)" '
        /Elapsed \(wall clock\)/ { n = split($NF, t, ":"); wall = (n == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
        /User time/ { user = $NF } /System time/ { sys = $NF }
        /Maximum resident set size/ { rss = $NF }
        END { printf "%.2f %.2f %d %.2f\n", wall, user + sys, rss, (after - before) / hz >> out }' "$WORK/time.out"
}

# podman's storage driver: its own choice (overlay) unless the work directory is on btrfs.
if [ "$(stat -f -c %T "$WORK")" = btrfs ]; then LR_PODMAN_DRIVER=btrfs; fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
REF=$REGISTRY/bench/image:latest
for run in $(seq "$RUNS"); do
    echo "bench: run $run/$RUNS: pull-oci"
    mkdir "$WORK/ours"
    time_run ours "$WORK/ours.log" env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" \
        "$BIN" pull-oci --image-root="$WORK/ours" "$REF" image
    [ -f "$WORK/ours/image/$CHECK" ] || die "pull-oci produced no image"
    remove_tree "$WORK/ours"

    if has_peer skopeo; then
        echo "bench: run $run/$RUNS: skopeo copy + umoci unpack"
        rm -rf "$WORK/layout" "$WORK/bundle"
        time_run skopeo "$WORK/skopeo.log" skopeo copy --quiet --src-cert-dir "$WORK/certs.d" \
            "docker://$REF" "oci:$WORK/layout:latest"
        time_run umoci "$WORK/umoci.log" umoci unpack --image "$WORK/layout:latest" "$WORK/bundle"
        [ -f "$WORK/bundle/rootfs/$CHECK" ] || die "umoci produced no rootfs"
        rm -rf "$WORK/layout" "$WORK/bundle"
    fi
    if has_peer podman; then
        echo "bench: run $run/$RUNS: podman pull (${LR_PODMAN_DRIVER:-overlay})"
        lr_podman_args "$WORK/podman"
        time_run podman "$WORK/podman.log" "${LR_PODMAN[@]}" pull --quiet \
            --cert-dir "$WORK/certs.d" "docker://$REF"
        find "$WORK/podman/root" -path "*/$CHECK" -print -quit | grep -q . ||
            die "podman stored no $CHECK"
        lr_podman_reset "$WORK/podman"
    fi
done

# --- Report ---------------------------------------------------------------------------------
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$2" '{ print $c }' "$WORK/result.$1" | median; }
# row LABEL NAME: the medians of NAME's wall, CPU and peak RSS.
row() {
    awk -v l="$1" -v w="$(col "$2" 1)" -v c="$(col "$2" 2)" -v r="$(col "$2" 3)" \
        'BEGIN { printf "%-28s %10.2f %10.2f %16.1f\n", l, w, c, r / 1024 }'
}
# ratio LABEL NAME: NAME's medians over pull-oci's.
ratio() {
    awk -v l="$1" -v w="$(col "$2" 1)" -v c="$(col "$2" 2)" -v r="$(col "$2" 3)" \
        -v ow="$(col ours 1)" -v oc="$(col ours 2)" -v orss="$(col ours 3)" \
        'BEGIN { printf "%-28s %9.2fx %9.2fx %15.2fx\n", l, w / ow, c / oc, r / orss }'
}
cache=warm
[ "$COLD" = 1 ] && cache=cold
echo
echo "Image $IMAGE; median of $RUNS runs; $(du -sh "$WORK/registry" | cut -f1) in the registry; file system $(findmnt -n -o FSTYPE -T "$WORK" | head -n 1); page cache $cache; scale 1/$SCALE; load average before: $LOAD_BEFORE"
# skopeo+umoci add up per run (RSS: the larger).
if has_peer skopeo; then
    paste -d' ' "$WORK/result.skopeo" "$WORK/result.umoci" |
        awk '{ printf "%.2f %.2f %d %.2f\n", $1 + $5, $2 + $6, ($3 > $7 ? $3 : $7), $4 + $8 }' >"$WORK/result.peers"
fi
echo "Per run (wall s, CPU s, peak RSS KiB, CPU s stolen by the host):"
for run in $(seq "$RUNS"); do
    line="  run $run: pull-oci $(sed -n "${run}p" "$WORK/result.ours")"
    for name in skopeo umoci podman; do
        [ -f "$WORK/result.$name" ] && line+=" | $name $(sed -n "${run}p" "$WORK/result.$name")"
    done
    echo "$line"
done
printf '%-28s %10s %10s %16s\n' "" "wall (s)" "CPU (s)" "peak RSS (MiB)"
row "systemd-import pull-oci" ours
if has_peer skopeo; then
    row "skopeo copy + umoci unpack" peers
    printf '%-28s %10.2f\n' "  skopeo copy" "$(col skopeo 1)" "  umoci unpack" "$(col umoci 1)"
fi
has_peer podman && row "podman pull (${LR_PODMAN_DRIVER:-overlay})" podman
has_peer skopeo && ratio "skopeo+umoci / pull-oci" peers
has_peer podman && ratio "podman / pull-oci" podman
exit 0
