#!/usr/bin/env bash
# Benchmark: a pull killed (SIGKILL) halfway through its downloads and run again, against
# the same pull uninterrupted. Prints, for each, the bytes the server sent (from its log)
# and the wall time; for the killed pull, the bytes its partial downloads held when it was
# killed. The re-run resumes them (Range requests), so killed + re-run should fetch about
# one image's worth, not one and a half.
#
# BENCH_KIND=oci (the default): pull-oci of an image of 2 gzip layers of noise from a
# local docker-registry (bytes from its log), partials `.#oci-blob-sha256-<hex>.partial`.
# BENCH_KIND=tar: pull-tar of a gzip'd tarball of noise that nginx serves as a static file
# (strong ETag, Range and If-Range; bytes from its access log), partial
# `.#url-<url>.partial` (setup in bench/resume-tar.sh).
#
# Run as root on Debian 12 with docker-registry, openssl, curl, tar, gzip (and nginx for
# the tar kind) installed, after `cargo build --release`:
#
#   bench/resume.sh                 # 512 MiB image (2 layers of noise)
#   BENCH_MB=64 bench/resume.sh     # a small one (a smoke test of the script)
#   BENCH_DIR=/dev/shm bench/resume.sh
#   BENCH_KILL_AT=30 bench/resume.sh   # kill at 30 % instead of 50 %
#   BENCH_KIND=tar bench/resume.sh     # pull-tar (BENCH_MB=64 for a smoke test)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/registry-bench.sh
. bench/registry-bench.sh

MB=${BENCH_MB:-512}
KILL_AT=${BENCH_KILL_AT:-50}
KIND=${BENCH_KIND:-oci}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/resume-bench.XXXXXX")
PULL_PID=
NGINX_PID=
cleanup() {
    [ -n "$PULL_PID" ] && { kill -9 "$PULL_PID" 2>/dev/null || true; wait "$PULL_PID" 2>/dev/null || true; }
    [ -n "$NGINX_PID" ] && { kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
    lr_stop_registry
    rm -rf "$WORK"
}
trap cleanup EXIT

# Each kind sets: TOTAL (bytes to download), WHAT (what TOTAL is), PARTIALS (the partials'
# glob in a root), RESUMED (what the re-run's log says when it resumes), served (bytes sent
# so far) and start_pull ROOT LOG (in the background, PULL_PID).
case $KIND in
oci)
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
    TOTAL=$(cat "${layers[@]}" | wc -c)
    rm -f "${layers[@]}"
    WHAT="the layers"
    PARTIALS='.#oci-blob-sha256-*.partial'
    RESUMED="Resuming download of layer\|is complete on disk"
    served() { lr_served_bytes; }
    start_pull() {
        env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" "$BIN" pull-oci --image-root="$1" \
            "$LR_REGISTRY/bench/image:latest" image >"$2" 2>&1 &
        PULL_PID=$!
    }
    ;;
tar)
    # shellcheck source=bench/resume-tar.sh
    . bench/resume-tar.sh
    ;;
*) die "BENCH_KIND: oci or tar" ;;
esac

now() { date +%s.%N; }
finish() { # NAME LOG: wait for the pull, fail loudly
    wait "$PULL_PID" || { cat "$2" >&2; die "$1 failed"; }
    PULL_PID=
}
report() { # NAME START END BYTES
    awk -v n="$1" -v a="$2" -v b="$3" -v s="$4" -v l="$TOTAL" -v w="$WHAT" 'BEGIN {
        printf "%-22s %8.2f s wall %14d bytes served (%.2f x %s)\n", n, b - a, s, s / l, w }'
}
# A pull of ROOT to completion, logged to LOG, reported as NAME: sets START, END, SENT.
pull_whole() { # NAME ROOT LOG
    local before
    before=$(served)
    START=$(now)
    start_pull "$2" "$3"
    finish "$1" "$3"
    END=$(now)
    sleep 0.5 # a server logs a response after sending it
    SENT=$(($(served) - before))
    report "$1" "$START" "$END" "$SENT"
}

# (a) Uninterrupted.
mkdir -p "$WORK/clean"
pull_whole "$KIND uninterrupted" "$WORK/clean" "$WORK/clean.log"
rm -rf "$WORK/clean"

# (b) Killed once the partial downloads hold KILL_AT % of the bytes, then run again.
root=$WORK/killed
mkdir -p "$root"
before=$(served)
target=$((TOTAL * KILL_AT / 100))
declare -A most=()
held=0
start=$(now)
start_pull "$root" "$WORK/killed.log"
while [ "$held" -lt "$target" ]; do
    kill -0 "$PULL_PID" 2>/dev/null || die "the pull ended before ${KILL_AT} % (use a larger BENCH_MB)"
    held=0
    for f in "$root"/$PARTIALS; do
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
# shellcheck disable=SC2086 # the glob
on_disk=$(cat "$root"/$PARTIALS 2>/dev/null | wc -c || true)
sleep 0.5
report "killed at ${KILL_AT} %" "$start" "$end" $(($(served) - before))
echo "  (its partial downloads held $on_disk bytes at the kill; an answer cut short may not be logged)"
pull_whole "re-run" "$root" "$WORK/rerun.log"
grep -h "$RESUMED" "$WORK/rerun.log" | sed 's/^/  /' || true
awk -v a="$start" -v b="$end" -v c="$START" -v d="$END" -v k="$on_disk" -v r="$SENT" -v l="$TOTAL" -v w="$WHAT" 'BEGIN {
    printf "killed + re-run: %.2f s wall; %d bytes fetched (on disk at the kill + re-run: %.2f x %s)\n",
        (b - a) + (d - c), k + r, (k + r) / l, w }'
