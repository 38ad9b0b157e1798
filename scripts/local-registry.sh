# Shell helpers for a throw-away local registry (sourced by quickstart-oci.sh and the
# benches in bench/): a CA and server certificate made with openssl, Debian's docker-registry
# on a free 127.0.0.1 port with TLS, and pushing blobs and manifests with curl over the
# registry HTTP API.
#
# Set LR_DIR (an existing, empty directory) before calling; everything goes below it.
# After lr_start_registry: LR_REGISTRY (host:port), LR_CA (the CA file), LR_PID.
# Call lr_stop_registry when done (the callers do it from their EXIT traps).

# lr_make_tls: $LR_DIR/tls/{ca.pem,server.pem,server.key} for 127.0.0.1 and localhost.
lr_make_tls() {
    mkdir -p "$LR_DIR/tls"
    (
        cd "$LR_DIR/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=local-registry-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out server.pem 2>/dev/null
    )
    LR_CA=$LR_DIR/tls/ca.pem
}

# lr_start_registry: docker-registry serving $LR_DIR/registry over TLS on a free port.
lr_start_registry() {
    local port _
    [ -n "${LR_CA:-}" ] || lr_make_tls
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        cat >"$LR_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $LR_DIR/registry
http:
  addr: 127.0.0.1:$port
  tls:
    certificate: $LR_DIR/tls/server.pem
    key: $LR_DIR/tls/server.key
EOF
        docker-registry serve "$LR_DIR/registry.yml" >"$LR_DIR/registry.log" 2>&1 &
        LR_PID=$!
        for _ in $(seq 100); do
            if curl -sf --cacert "$LR_CA" "https://127.0.0.1:$port/v2/" >/dev/null; then
                LR_REGISTRY=127.0.0.1:$port
                return 0
            fi
            kill -0 "$LR_PID" 2>/dev/null || break
            sleep 0.1
        done
        lr_stop_registry
    done
    cat "$LR_DIR/registry.log" >&2
    echo "docker-registry did not start" >&2
    return 1
}

# lr_start_logged_registry: lr_start_registry, but logging every answer (info level, text
# format) to $LR_DIR/registry.log, for lr_served_bytes.
lr_start_logged_registry() {
    lr_start_registry
    sed -i 's/level: warn/level: info\n  formatter: text/' "$LR_DIR/registry.yml"
    lr_stop_registry
    docker-registry serve "$LR_DIR/registry.yml" >"$LR_DIR/registry.log" 2>&1 &
    LR_PID=$!
    for _ in $(seq 100); do
        curl -sf --cacert "$LR_CA" "https://$LR_REGISTRY/v2/" >/dev/null && return 0
        sleep 0.1
    done
    echo "docker-registry did not start" >&2
    return 1
}

# lr_served_bytes: the body bytes of every answer a logged registry completed so far
# (distribution logs `http.response.written=N` for each).
lr_served_bytes() {
    sed -n 's/.*msg="response completed".*http\.response\.written=\([0-9]*\).*/\1/p' \
        "$LR_DIR/registry.log" | awk '{ s += $1 } END { print s + 0 }'
}

lr_stop_registry() {
    if [ -n "${LR_PID:-}" ]; then
        kill "$LR_PID" 2>/dev/null || true
        wait "$LR_PID" 2>/dev/null || true
        LR_PID=
    fi
}

# lr_push_blob REPO FILE: upload FILE as a blob of REPO; prints its digest.
lr_push_blob() {
    local repo=$1 file=$2 digest location
    digest=sha256:$(sha256sum <"$file" | cut -d' ' -f1)
    location=$(curl -sSf --cacert "$LR_CA" -X POST -D - -o /dev/null \
        "https://$LR_REGISTRY/v2/$repo/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $location in http*) ;; *) location=https://$LR_REGISTRY$location ;; esac
    case $location in *\?*) location="$location&digest=$digest" ;; *) location="$location?digest=$digest" ;; esac
    curl -sSf --cacert "$LR_CA" -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$file" -o /dev/null "$location"
    echo "$digest"
}

# lr_push_manifest REPO TAG MEDIA_TYPE FILE
lr_push_manifest() {
    curl -sSf --cacert "$LR_CA" -X PUT -H "Content-Type: $3" --data-binary "@$4" -o /dev/null \
        "https://$LR_REGISTRY/v2/$1/manifests/$2"
}

# lr_push_image REPO TAG CONFIG_JSON_FILE LAYER.tar.gz…: push gzip layers and a config
# (whose rootfs.diff_ids the caller wrote) as an OCI image manifest under TAG.
lr_push_image() {
    local repo=$1 tag=$2 config=$3 layers= layer digest config_digest
    shift 3
    for layer in "$@"; do
        digest=$(lr_push_blob "$repo" "$layer")
        layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$(stat -c %s "$layer")}"
    done
    config_digest=$(lr_push_blob "$repo" "$config")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
        "$config_digest" "$(stat -c %s "$config")" "$layers" >"$LR_DIR/manifest.json"
    lr_push_manifest "$repo" "$tag" application/vnd.oci.image.manifest.v1+json "$LR_DIR/manifest.json"
}

# lr_diff_id FILE.tar: the DiffID (sha256 of the uncompressed tar).
lr_diff_id() {
    echo "sha256:$(sha256sum <"$1" | cut -d' ' -f1)"
}

# Benchmark images of noise (it does not compress: bytes on the wire = size). Layer I of
# BYTES random bytes (and the file hostname, if a third argument says so) as
# $WORK/layerI.tar.gz, appended to the caller's array `layers`, its DiffID to the
# caller's string `diff_ids`.
lr_noise_layer() {
    local i=$1 bytes=$2
    mkdir -p "$WORK/layer$i/data"
    head -c "$bytes" /dev/urandom >"$WORK/layer$i/data/blob$i"
    if [ -n "${3:-}" ]; then echo bench >"$WORK/layer$i/data/hostname"; fi
    tar -C "$WORK/layer$i" -cf "$WORK/layer$i.tar" data
    rm -rf "$WORK/layer$i"
    diff_ids+="${diff_ids:+,}\"$(lr_diff_id "$WORK/layer$i.tar")\""
    gzip -1 -c "$WORK/layer$i.tar" >"$WORK/layer$i.tar.gz"
    rm "$WORK/layer$i.tar"
    layers+=("$WORK/layer$i.tar.gz")
}

# Push `layers` as bench/image:latest, with a config ($WORK/config.json) naming `diff_ids`.
lr_push_noise_image() {
    printf '{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":[%s]}}' \
        "$(dpkg --print-architecture 2>/dev/null || echo amd64)" "$diff_ids" >"$WORK/config.json"
    lr_push_image bench/image latest "$WORK/config.json" "${layers[@]}"
}

# podman as a benchmark peer, with storage of its own below DIR (DIR/root), so a run
# starts from an empty store and never touches the host's. `lr_podman_args DIR` sets the
# array LR_PODMAN to the command to run (`"${LR_PODMAN[@]}" pull …`; an array, not a
# function, so that /usr/bin/time can run it). Its run root is a directory of its own
# under /run (podman refuses one longer than 50 characters). The storage driver is
# podman's own choice unless LR_PODMAN_DRIVER names one: Debian's podman 4.3 has no
# storage.conf and probes overlay first, which works on ext4 and tmpfs (native overlay
# diff on this kernel); on btrfs the benches ask for its btrfs driver (a subvolume per
# layer), as issue 15 says.
lr_podman_args() {
    [ -n "${LR_PODMAN_RUN:-}" ] || LR_PODMAN_RUN=$(mktemp -d /run/lr-podman.XXXXXX)
    LR_PODMAN=(podman --root "$1/root" --runroot "$LR_PODMAN_RUN" --events-backend file
        --cgroup-manager cgroupfs ${LR_PODMAN_DRIVER:+--storage-driver "$LR_PODMAN_DRIVER"})
}

# lr_podman_reset DIR: remove the store lr_podman_args DIR set up (podman first, for the
# btrfs driver's subvolumes), DIR and the run root.
lr_podman_reset() {
    lr_podman_args "$1"
    "${LR_PODMAN[@]}" system reset --force >/dev/null 2>&1 || true
    rm -rf "$1" "$LR_PODMAN_RUN"
    LR_PODMAN_RUN=
}

# lr_nginx_conf DIR CONNECTIONS HTTP_BODY: write DIR/nginx.conf for a throw-away nginx
# whose pid, logs and temporary files all live under DIR (created here), with HTTP_BODY
# (its log settings and server blocks) inside the http block. Run it as
# `nginx -c DIR/nginx.conf -p DIR`.
lr_nginx_conf() {
    mkdir -p "$1/tmp"
    cat >"$1/nginx.conf" <<CONF
pid $1/nginx.pid;
daemon off;
error_log $1/error.log warn;
events { worker_connections $2; }
http {
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
$3
}
CONF
}
