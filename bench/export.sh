#!/usr/bin/env bash
# Benchmark: export a large image with the export library (examples/export.rs) and with
# Debian 12's /lib/systemd/systemd-export (systemd 252, which runs GNU tar), in each
# format, and print wall time, CPU time (user+sys) and peak RSS of each.
#
# The image (generated once, not timed): a directory tree holding
#   * sparse.img: 2 GiB apparent size, 64 MiB of data in 16 extents, the rest holes;
#   * dense.bin:  512 MiB, half noise (incompressible), half text (compresses ~3:1);
#   * 2,000 small text files in 20 directories;
# and, for raw exports, sparse.img on its own as a raw image.
#
# Run as root on Debian 12 with systemd-container, time, perl and util-linux installed:
#
#   bench/export.sh                     # in /var/tmp
#   BENCH_DIR=/dev/shm bench/export.sh  # elsewhere (here tmpfs)
#   BENCH_FORMATS="uncompressed zstd" bench/export.sh
#   BENCH_PEER=no bench/export.sh       # ours only
#
# Debian's tool only finds images below /var/lib/machines: it runs in a private mount
# namespace with the work directory bound over that path (the host's is not touched).
# Its peak RSS is that of its largest process (systemd-export or its tar child).
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the export reads every file and xattr)"
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
cargo build --release --example export >/dev/null 2>&1 || die "cargo build --release --example export failed"
OURS=$PWD/target/release/examples/export
DEBIAN=/lib/systemd/systemd-export
PEER=${BENCH_PEER:-yes}
[ "$PEER" = no ] || [ -x "$DEBIAN" ] || die "$DEBIAN not found (apt-get install systemd-container, or BENCH_PEER=no)"
FORMATS=${BENCH_FORMATS:-uncompressed xz gzip bzip2 zstd}

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/export-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "bench: working in $WORK"

# --- The image ---------------------------------------------------------------------------
IMAGE=$WORK/machines/image
mkdir -p "$IMAGE"
perl -e '
    use strict; use warnings;
    my $dir = shift;
    srand(42);
    my @words = map { join "", map { chr(97 + int rand 26) } 1 .. (2 + int rand 9) } 1 .. 4096;
    sub text { my $n = shift; my $s = ""; $s .= $words[int rand @words] . (rand() < 0.1 ? "\n" : " ") while length $s < $n; substr($s, 0, $n) }
    sub noise { my $n = shift; open(my $r, "<", "/dev/urandom") or die; read($r, my $b, $n); $b }
    open(my $d, ">", "$dir/dense.bin") or die;
    for (1 .. 64) { print $d noise(4 << 20); }
    for (1 .. 64) { print $d text(4 << 20); }
    close $d;
    open(my $s, ">", "$dir/sparse.img") or die;
    for my $i (0 .. 15) { seek($s, $i * (128 << 20), 0); print $s noise(2 << 20) . text(2 << 20); }
    truncate($s, 2 << 30); close $s;
    for my $i (0 .. 19) {
        mkdir "$dir/etc$i" or die;
        for my $j (0 .. 99) { open(my $f, ">", "$dir/etc$i/f$j") or die; print $f text(64 + int rand 8000); close $f; }
    }
' "$IMAGE"
RAW=$WORK/machines/rawimage.raw
cp --sparse=always "$IMAGE/sparse.img" "$RAW"
printf 'bench: image: %s apparent, %s allocated; raw image: %s apparent, %s allocated\n' \
    "$(du -sh --apparent-size "$IMAGE" | cut -f1)" "$(du -sh "$IMAGE" | cut -f1)" \
    "$(du -sh --apparent-size "$RAW" | cut -f1)" "$(du -sh "$RAW" | cut -f1)"

# --- Timed runs --------------------------------------------------------------------------
# time_run LABEL CMD…: run under /usr/bin/time, print "LABEL wall cpu rss size".
time_run() {
    local label=$1
    shift
    rm -f "$WORK/out"
    sync
    if ! /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" "$@" >"$WORK/log" 2>&1; then
        cat "$WORK/log" >&2
        die "$label failed"
    fi
    read -r wall user sys rss <"$WORK/time.out"
    printf '%-28s %8.2f s %8.2f s %8d KiB %12d B\n' "$label" "$wall" \
        "$(echo "$user + $sys" | bc)" "$rss" "$(stat -c %s "$WORK/out")"
}
# $WORK/debian tar|raw NAME FORMAT: Debian's export of image NAME to $WORK/out.
cat >"$WORK/debian" <<DEBIAN
#!/bin/sh
exec unshare --mount --propagation private -- sh -c \\
    'mount --bind "\$1" /var/lib/machines && shift && exec "\$@"' \\
    sh "$WORK/machines" "$DEBIAN" --format="\$3" "\$1" "\$2" "$WORK/out"
DEBIAN
chmod +x "$WORK/debian"

printf '%-28s %10s %10s %12s %14s\n' export wall cpu "peak RSS" output
for format in $FORMATS; do
    time_run "ours tar $format" "$OURS" tar "$IMAGE" "$WORK/out" "$format"
    if [ "$PEER" != no ] && [ "$format" != zstd ]; then
        time_run "debian tar $format" "$WORK/debian" tar image "$format"
    fi
done
for format in $FORMATS; do
    time_run "ours raw $format" "$OURS" raw "$RAW" "$WORK/out" "$format"
    if [ "$PEER" != no ] && [ "$format" != zstd ]; then
        time_run "debian raw $format" "$WORK/debian" raw rawimage "$format"
    fi
done
echo "bench: load average before/after: $(cut -d' ' -f1-3 /proc/loadavg)"
