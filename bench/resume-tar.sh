# The pull-tar kind of bench/resume.sh (sourced by it with BENCH_KIND=tar; WORK and MB
# set): a gzip'd tarball of MB MiB of noise that nginx serves over HTTPS as a static file
# (strong ETag, Range and If-Range honoured), logging $body_bytes_sent of every answer.
# Sets what resume.sh's kinds set: TOTAL, WHAT, PARTIALS, RESUMED, served, start_pull.

command -v nginx >/dev/null || die "'nginx' not found (nginx-light)"
LR_DIR=$WORK/tls
mkdir -p "$LR_DIR" "$WORK/srv" "$WORK/nginx/tmp"
lr_make_tls

echo "bench: building a ${MB} MiB tarball of noise" >&2
head -c $((MB * 1024 * 1024)) /dev/urandom >"$WORK/noise.bin"
tar -C "$WORK" -cf - noise.bin | gzip -1 >"$WORK/srv/image.tar.gz"
rm -f "$WORK/noise.bin"
TOTAL=$(stat -c %s "$WORK/srv/image.tar.gz")
WHAT="the file"
PARTIALS='.#url-*.partial'
RESUMED="Resuming download of"
# nginx's workers (not root) read the file.
chmod 755 "$WORK" "$WORK/srv"
chmod 644 "$WORK/srv/image.tar.gz"

PORT=$((20000 + RANDOM % 40000))
lr_nginx_conf "$WORK/nginx" 64 "
    log_format bytes '\$body_bytes_sent';
    access_log $WORK/nginx/access.log bytes;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $LR_DIR/tls/server.pem;
        ssl_certificate_key $LR_DIR/tls/server.key;
        root $WORK/srv;
    }"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
URL=https://127.0.0.1:$PORT/image.tar.gz
for _ in $(seq 100); do
    curl -sf --cacert "$LR_CA" -o /dev/null -r 0-0 "$URL" && break
    sleep 0.1
done

served() { awk '{ s += $1 } END { print s + 0 }' "$WORK/nginx/access.log"; }
start_pull() { # ROOT LOG
    env -u CURL_CA_BUNDLE SSL_CERT_FILE="$LR_CA" "$BIN" pull-tar --verify=no \
        --image-root="$1" "$URL" image >"$2" 2>&1 &
    PULL_PID=$!
}
