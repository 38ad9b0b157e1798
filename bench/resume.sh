#!/usr/bin/env bash
# Benchmark: a pull-oci killed (SIGKILL) halfway through its downloads and run again,
# against the same pull uninterrupted. Prints, for each, the bytes the registry served
# (from its log) and the wall time; for the killed pull, the bytes its partial downloads
# held when it was killed. The re-run resumes them (Range requests), so killed + re-run
# should fetch about one image's worth, not one and a half.
#
# Run as root on Debian 12 with docker-registry, openssl, curl, tar, gzip installed,
# after `cargo build --release`:
#
#   bench/resume.sh                 # 512 MiB image (2 layers of noise)
#   BENCH_MB=64 bench/resume.sh     # a small one (a smoke test of the script)
#   BENCH_DIR=/dev/shm bench/resume.sh
#   BENCH_KILL_AT=30 bench/resume.sh   # kill at 30 % instead of 50 %
#
# The pull-tar variant (BENCH_KIND=tar; needs nginx too) does the same with a gzip'd
# tarball of noise served by nginx (static file: strong ETag, Range and If-Range), the
# bytes served summed from nginx's access log ($body_bytes_sent), the partial being
# `.#url-<url>.partial`:
#
#   BENCH_KIND=tar bench/resume.sh
#   BENCH_KIND=tar BENCH_MB=64 bench/resume.sh
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/registry-bench.sh
. bench/registry-bench.sh

MB=${BENCH_MB:-512}
KILL_AT=${BENCH_KILL_AT:-50}
if [ "${BENCH_KIND:-oci}" = tar ]; then
    # shellcheck source=bench/resume-tar.sh
    . bench/resume-tar.sh
    exit 0
fi
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/resume-bench.XXXXXX")
PULL_PID=
cleanup() {
    [ -n "$PULL_PID" ] && { kill -9 "$PULL_PID" 2>/dev/null || true; wait "$PULL_PID" 2>/dev/null || true; }
    lr_stop_registry
    rm -rf "$WORK"
}
trap cleanup EXIT

# The registry, logging every request (for the bytes it serves).
LR_DIR=$WORK/registry
mkdir -p "$LR_DIR"
lr_start_logged_registry

# The image: 2 gzip layers of noise (they do not compress: bytes on the wire = size).
echo "bench: building a ${MB} MiB image" >&2
diff_ids=
layers=()
for i in 1 2; do
    lr_noise_layer "$i" $((MB * 1024 * 1024 / 2))
done
lr_push_noise_image
LAYER_BYTES=$(cat "${layers[@]}" | wc -c)
rm -f "${layers[@]}"

now() { date +%s.%N; }
pull() { # ROOT LOG: the pull, in the background (PULL_PID)
    env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" "$BIN" pull-oci --image-root="$1" \
        "$LR_REGISTRY/bench/image:latest" image >"$2" 2>&1 &
    PULL_PID=$!
}
finish() { # NAME LOG: wait for the pull, fail loudly
    wait "$PULL_PID" || { cat "$2" >&2; die "$1 failed"; }
    PULL_PID=
}
report() { # NAME START END BYTES
    awk -v n="$1" -v a="$2" -v b="$3" -v s="$4" -v l="$LAYER_BYTES" 'BEGIN {
        printf "%-22s %8.2f s wall %14d bytes served (%.2f x the layers)\n", n, b - a, s, s / l }'
}

# (a) Uninterrupted.
root=$WORK/clean
mkdir -p "$root"
before=$(lr_served_bytes)
start=$(now)
pull "$root" "$WORK/clean.log"
finish "the uninterrupted pull" "$WORK/clean.log"
end=$(now)
sleep 0.5 # the registry logs a response after sending it
report "uninterrupted" "$start" "$end" $(($(lr_served_bytes) - before))
rm -rf "$root"

# (b) Killed once the partial downloads hold KILL_AT % of the layers, then run again.
root=$WORK/killed
mkdir -p "$root"
before=$(lr_served_bytes)
target=$((LAYER_BYTES * KILL_AT / 100))
declare -A most=()
held=0
start=$(now)
pull "$root" "$WORK/killed.log"
while [ "$held" -lt "$target" ]; do
    kill -0 "$PULL_PID" 2>/dev/null || die "the pull ended before ${KILL_AT} % (use a larger BENCH_MB)"
    held=0
    for f in "$root"/.#oci-blob-sha256-*.partial; do
        [ -e "$f" ] || continue
        size=$(stat -c %s "$f" 2>/dev/null || echo 0)
        [ "$size" -gt "${most[$f]:-0}" ] && most[$f]=$size
    done
    for f in "${!most[@]}"; do held=$((held + most[$f])); done
    sleep 0.01
done
kill -9 "$PULL_PID"
wait "$PULL_PID" 2>/dev/null || true
PULL_PID=
end=$(now)
on_disk=$(cat "$root"/.#oci-blob-sha256-*.partial 2>/dev/null | wc -c)
sleep 0.5
killed_served=$(($(lr_served_bytes) - before))
report "killed at ${KILL_AT} %" "$start" "$end" "$killed_served"
echo "  (its partial downloads held $on_disk bytes at the kill; an answer cut short may not be logged)"
before=$(lr_served_bytes)
start2=$(now)
pull "$root" "$WORK/rerun.log"
finish "the re-run" "$WORK/rerun.log"
end2=$(now)
sleep 0.5
rerun=$(($(lr_served_bytes) - before))
report "re-run" "$start2" "$end2" "$rerun"
grep -h "Resuming download of layer\|is complete on disk" "$WORK/rerun.log" | sed 's/^/  /' || true
awk -v a="$start" -v b="$end" -v c="$start2" -v d="$end2" -v k="$on_disk" -v r="$rerun" -v l="$LAYER_BYTES" 'BEGIN {
    printf "killed + re-run: %.2f s wall; %d bytes fetched (on disk at the kill + re-run: %.2f x the layers)\n",
        (b - a) + (d - c), k + r, (k + r) / l }'
