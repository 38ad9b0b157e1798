# The start of the benchmarks against a local docker-registry (sourced by bench/fleet.sh
# and bench/resume.sh, after `cd` to the repository): run as root, with the release build
# and the registry tools; sets REPO_ROOT and BIN, and sources scripts/local-registry.sh.

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the unpacker restores ownership)"
REPO_ROOT=$PWD
BIN=$REPO_ROOT/target/release/systemd-import
# shellcheck source=scripts/local-registry.sh
. "$REPO_ROOT/scripts/local-registry.sh"
[ -x "$BIN" ] || die "build first: cargo build --release"
for tool in docker-registry openssl curl tar gzip sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done
