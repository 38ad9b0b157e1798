#!/usr/bin/env bash
# Download benchmark: pull-raw and pull-tar of the same gzip-compressed inputs from a local
# HTTP server, ours against Debian 12's systemd-pull (systemd 252, the C tool's descendant).
# Prints wall time, CPU time (user+sys) and peak RSS of each, median of $RUNS runs.
#
#   sudo bench/download.sh            # RUNS=3 SIZE_MIB=1024 by default
#   sudo BENCH_FS=btrfs bench/download.sh   # on a fresh loop-mounted btrfs (or ext4)
#   sudo BENCH_DIR=/dev/shm bench/download.sh   # tmpfs
#   sudo BENCH_COLD=1 bench/download.sh       # drop the page cache before each run
#   sudo SIZE_MIB=64 BENCH_TREE=/usr/share/doc RUNS=1 bench/download.sh   # a smoke run
#   sudo BENCH_ONLY=tar BENCH_FS=ext4 bench/download.sh   # pull-tar only (or BENCH_ONLY=raw)
#   sudo BENCH_SYNC=yes bench/download.sh     # both tools sync the file system at the end
#
# Both tools run as systemd-pull (ours through its systemd-pull personality) with the same
# options: --verify=no and --sync=$BENCH_SYNC (default no). The seed's pull-tar/pull-raw
# always sync (the file system, at the end), and syncfs of the 1.3 GB the tar pull writes is
# seconds on a slow disk: timing them against systemd-pull --sync=no measured the sync.
#
# pull-tar runs twice: keeping the download (cache entry + local image: a snapshot on
# btrfs, a reflinked copy where extents can be shared, elsewhere a second tree unpacked
# in the same pass) and as systemd-pull with --keep-download=no (one tree; systemd-pull
# 252 has no such option).
#
# Needs: cargo, python3, gzip, /usr/bin/time (package time), systemd-container (for
# /usr/lib/systemd/systemd-pull). Works in a temporary directory under $BENCH_DIR
# (default /var/tmp), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
BENCH_FS=${BENCH_FS:-}
BENCH_COLD=${BENCH_COLD:-0}
BENCH_TREE=${BENCH_TREE:-/usr/share}
BENCH_ONLY=${BENCH_ONLY:-}
case $BENCH_ONLY in ''|raw|tar) ;; *) echo "BENCH_ONLY=raw|tar" >&2; exit 1 ;; esac
BENCH_SYNC=${BENCH_SYNC:-no}
case $BENCH_SYNC in yes|no) ;; *) echo "BENCH_SYNC=yes|no" >&2; exit 1 ;; esac
C_PULL=/usr/lib/systemd/systemd-pull

for tool in python3 gzip /usr/bin/time "$C_PULL"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (install python3 gzip time systemd-container)" >&2; exit 1; }
done
cargo build --release --quiet
OURS=$PWD/target/release/systemd-import

mount_dir= fs_image=
if [ -n "$BENCH_FS" ]; then
    # A fresh file system on a loop device (8 GiB sparse file under $BENCH_DIR).
    case $BENCH_FS in ext4) mkfs=(mkfs.ext4 -q) ;; btrfs) mkfs=(mkfs.btrfs -q) ;; *) echo "BENCH_FS=ext4|btrfs" >&2; exit 1 ;; esac
    fs_image=$(mktemp "$BENCH_DIR/download-bench-fs.XXXXXX")
    truncate -s 8G "$fs_image"
    "${mkfs[@]}" "$fs_image" >/dev/null
    mount_dir=$(mktemp -d "$BENCH_DIR/download-bench-mnt.XXXXXX")
    mount -o loop "$fs_image" "$mount_dir"
    BENCH_DIR=$mount_dir
fi
work=$(mktemp -d "$BENCH_DIR/download-bench.XXXXXX")
server_pid=
# systemd-pull 252 marks finished images immutable (chattr +i) off btrfs; on btrfs the
# cache entries are read-only subvolumes.
rm_tree() {
    chattr -R -i "$1" 2>/dev/null || true
    if command -v btrfs >/dev/null; then
        find "$1" -maxdepth 1 -mindepth 1 -exec btrfs property set -ts {} ro false \; >/dev/null 2>&1 || true
    fi
    rm -rf "$1"
}
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm_tree "$work"
    if [ -n "$mount_dir" ]; then
        umount "$mount_dir" && rmdir "$mount_dir"
        rm -f "$fs_image"
    fi
}
trap cleanup EXIT

# Inputs: a disk image of $SIZE_MIB MiB (a quarter random data, the rest zeros in runs, like
# a fresh file system) and a tarball of /usr/share (tens of thousands of small files).
mkdir -p "$work/srv"
if [ "$BENCH_ONLY" != tar ]; then
python3 - "$work/srv/disk.raw" "$SIZE_MIB" <<'EOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range(mib):
        f.write(os.urandom(1 << 20) if i % 4 == 0 else bytes(1 << 20))
EOF
gzip -1 -k "$work/srv/disk.raw" && rm "$work/srv/disk.raw"
fi
if [ "$BENCH_ONLY" != raw ]; then
    tar -C "$(dirname "$BENCH_TREE")" -cf - "$(basename "$BENCH_TREE")" | gzip -1 > "$work/srv/usr-share.tar.gz"
fi
# Ours as systemd-pull (the personality is chosen by the program name).
ln -s "$OURS" "$work/systemd-pull"
ls -l "$work/srv"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work/srv" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port"

# run LABEL CMD... → prints "wall cpu rss_kib" of one run, in a fresh image root.
measure() {
    local root=$work/root
    rm_tree "$root"; mkdir -p "$root"
    sync
    if [ "$BENCH_COLD" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" --image-root="$root" >/dev/null 2>"$work/log" \
        || { echo "FAILED: $*" >&2; cat "$work/log" >&2; exit 1; }
    awk '{ printf "%.2f %.2f %d\n", $1, $2 + $3, $4 }' "$work/time"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

report() {
    local label=$1; shift
    local walls=() cpus=() rsss=()
    for _ in $(seq "$RUNS"); do
        read -r w c r < <(measure "$@")
        walls+=("$w"); cpus+=("$c"); rsss+=("$r")
    done
    printf '%-34s wall %6.2f s   cpu %6.2f s   peak RSS %7.1f MiB\n' "$label" \
        "$(printf '%s\n' "${walls[@]}" | median)" "$(printf '%s\n' "${cpus[@]}" | median)" \
        "$(printf '%s\n' "${rsss[@]}" | median | awk '{ print $1 / 1024 }')"
}

cache=warm
[ "$BENCH_COLD" = 1 ] && cache=cold
echo "runs: $RUNS, machine: $(nproc) cores, image root on $(df --output=fstype "$BENCH_DIR" | tail -1), page cache $cache, tree $BENCH_TREE, --sync=$BENCH_SYNC"
common=(--verify=no "--sync=$BENCH_SYNC")
if [ "$BENCH_ONLY" != tar ]; then
    report "ours raw disk.raw.gz" "$work/systemd-pull" raw "${common[@]}" "$base/disk.raw.gz" bench-disk
    report "systemd-pull 252 raw" "$C_PULL" raw "${common[@]}" "$base/disk.raw.gz" bench-disk
fi
if [ "$BENCH_ONLY" != raw ]; then
    report "ours tar usr-share.tar.gz" "$work/systemd-pull" tar "${common[@]}" "$base/usr-share.tar.gz" bench-tree
    report "systemd-pull 252 tar" "$C_PULL" tar "${common[@]}" "$base/usr-share.tar.gz" bench-tree
    report "ours tar, no keep" "$work/systemd-pull" tar "${common[@]}" --keep-download=no "$base/usr-share.tar.gz" bench-tree
fi
