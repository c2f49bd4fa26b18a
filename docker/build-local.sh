#!/usr/bin/env bash
# Builds the shoal image with no container registry: the local Debian base
# (build-base.sh, cached), the `shoal` binary built on this host, and
# Dockerfile.runtime. Tags the result $SHOAL_IMAGE (default shoal:latest),
# the tag compose.yaml runs.
#
#   docker/build-local.sh            # dev build of the binary (the CI path)
#   SHOAL_PROFILE=release docker/build-local.sh
#   SHOAL_BIN=/path/to/shoal docker/build-local.sh   # no cargo build
#
# The binary links glibc and libstdc++ dynamically; the base is the same
# Debian release as the host this was written for (bookworm). On another
# host, build the binary in a bookworm environment or use docker/Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${SHOAL_IMAGE:-shoal:latest}"
BASE="${SHOAL_BASE_IMAGE:-shoal-base:bookworm}"
PROFILE="${SHOAL_PROFILE:-debug}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shoal-target}"

t0=$(date +%s)
SHOAL_BASE_IMAGE="$BASE" ./docker/build-base.sh
t1=$(date +%s)

if [ -n "${SHOAL_BIN:-}" ]; then
  # A binary built elsewhere (it must run on bookworm's glibc).
  BIN="$SHOAL_BIN"
else
  case "$PROFILE" in
    debug) cargo build --locked -p shoal-cli ;;
    release) cargo build --locked --release -p shoal-cli ;;
    *) echo "build-local: SHOAL_PROFILE must be debug or release, not '$PROFILE'" >&2; exit 1 ;;
  esac
  BIN="$CARGO_TARGET_DIR/$PROFILE/shoal"
fi
t2=$(date +%s)

# A context holding only the binary and the Dockerfile: nothing else is sent
# to the engine, and an unchanged binary hits the layer cache.
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
cp "$BIN" "$STAGE/shoal"
cp docker/Dockerfile.runtime "$STAGE/Dockerfile"
docker build -q --build-arg "BASE=$BASE" -t "$IMAGE" "$STAGE" >/dev/null
# A new binary leaves the previous image untagged (~80 MB each): drop those.
docker image prune -f --filter label=org.shoal.image=runtime >/dev/null
t3=$(date +%s)
echo "build-local: $IMAGE ready (base $((t1 - t0)) s, cargo $((t2 - t1)) s, image $((t3 - t2)) s)"
