# The pull-tar variant of bench/resume.sh (sourced by it with BENCH_KIND=tar, after
# registry-bench.sh; MB and KILL_AT set): a gzip'd tarball of MB MiB of noise served by
# nginx over HTTPS, pulled uninterrupted, then killed (SIGKILL) once its partial download
# holds KILL_AT % and run again. Prints bytes served (nginx's access log) and wall time.

command -v nginx >/dev/null || die "'nginx' not found (nginx-light)"
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/resume-tar-bench.XXXXXX")
PULL_PID=
NGINX_PID=
cleanup() {
    [ -n "$PULL_PID" ] && { kill -9 "$PULL_PID" 2>/dev/null || true; wait "$PULL_PID" 2>/dev/null || true; }
    [ -n "$NGINX_PID" ] && { kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT

LR_DIR=$WORK/tls
mkdir -p "$LR_DIR" "$WORK/srv" "$WORK/nginx/tmp"
lr_make_tls

echo "bench: building a ${MB} MiB tarball of noise" >&2
head -c $((MB * 1024 * 1024)) /dev/urandom >"$WORK/noise.bin"
tar -C "$WORK" -cf - noise.bin | gzip -1 >"$WORK/srv/image.tar.gz"
rm -f "$WORK/noise.bin"
FILE_BYTES=$(stat -c %s "$WORK/srv/image.tar.gz")
# nginx's workers (not root) read the file.
chmod 755 "$WORK" "$WORK/srv"
chmod 644 "$WORK/srv/image.tar.gz"

PORT=$((20000 + RANDOM % 40000))
cat >"$WORK/nginx/nginx.conf" <<CONF
pid $WORK/nginx/nginx.pid;
daemon off;
error_log $WORK/nginx/error.log warn;
events { worker_connections 64; }
http {
    log_format bytes '\$body_bytes_sent';
    access_log $WORK/nginx/access.log bytes;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $LR_DIR/tls/server.pem;
        ssl_certificate_key $LR_DIR/tls/server.key;
        root $WORK/srv;
    }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
URL=https://127.0.0.1:$PORT/image.tar.gz
for _ in $(seq 100); do
    curl -sf --cacert "$LR_CA" -o /dev/null -r 0-0 "$URL" && break
    sleep 0.1
done
partial_bytes() { # ROOT: bytes of its partial download (0 if none yet)
    local f
    for f in "$1"/.#url-*.partial; do
        [ -e "$f" ] && { stat -c %s "$f" 2>/dev/null || echo 0; return; }
    done
    echo 0
}
served() { awk '{ s += $1 } END { print s + 0 }' "$WORK/nginx/access.log"; }

now() { date +%s.%N; }
pull() { # ROOT LOG: the pull, in the background (PULL_PID)
    env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" "$BIN" pull-tar --verify=no \
        --image-root="$1" "$URL" image >"$2" 2>&1 &
    PULL_PID=$!
}
finish() { # NAME LOG: wait for the pull, fail loudly
    wait "$PULL_PID" || { cat "$2" >&2; die "$1 failed"; }
    PULL_PID=
}
report() { # NAME START END BYTES
    awk -v n="$1" -v a="$2" -v b="$3" -v s="$4" -v l="$FILE_BYTES" 'BEGIN {
        printf "%-22s %8.2f s wall %14d bytes served (%.2f x the file)\n", n, b - a, s, s / l }'
}

# (a) Uninterrupted.
root=$WORK/clean
mkdir -p "$root"
before=$(served)
start=$(now)
pull "$root" "$WORK/clean.log"
finish "the uninterrupted pull" "$WORK/clean.log"
end=$(now)
sleep 0.2
report "pull-tar uninterrupted" "$start" "$end" $(($(served) - before))
rm -rf "$root"

# (b) Killed once the partial holds KILL_AT % of the file, then run again.
root=$WORK/killed
mkdir -p "$root"
before=$(served)
target=$((FILE_BYTES * KILL_AT / 100))
held=0
start=$(now)
pull "$root" "$WORK/killed.log"
while [ "$held" -lt "$target" ]; do
    kill -0 "$PULL_PID" 2>/dev/null || die "the pull ended before ${KILL_AT} % (use a larger BENCH_MB)"
    held=$(partial_bytes "$root")
    sleep 0.01
done
kill -9 "$PULL_PID"
wait "$PULL_PID" 2>/dev/null || true
PULL_PID=
end=$(now)
on_disk=$(partial_bytes "$root")
sleep 0.2
report "killed at ${KILL_AT} %" "$start" "$end" $(($(served) - before))
echo "  (its partial download held $on_disk bytes at the kill)"
before=$(served)
start2=$(now)
pull "$root" "$WORK/rerun.log"
finish "the re-run" "$WORK/rerun.log"
end2=$(now)
sleep 0.2
rerun=$(($(served) - before))
report "re-run" "$start2" "$end2" "$rerun"
grep -h "Resuming download of" "$WORK/rerun.log" | sed 's/^/  /' || true
awk -v a="$start" -v b="$end" -v c="$start2" -v d="$end2" -v k="$on_disk" -v r="$rerun" -v l="$FILE_BYTES" 'BEGIN {
    printf "killed + re-run: %.2f s wall; %d bytes fetched (on disk at the kill + re-run: %.2f x the file)\n",
        (b - a) + (d - c), k + r, (k + r) / l }'
