#!/usr/bin/env bash
# Builds the local base image `shoal-base:bookworm` from Debian packages,
# without any container registry: debootstrap a minimal bookworm rootfs,
# add the runtime packages, `docker import` it.
#
# The image holds what docker/Dockerfile's runtime stage installs on top of
# debian:bookworm-slim (glibc, libstdc++, ca-certificates, ffmpeg for the
# test pattern, iproute2 and iptables for network impairment), so
# docker/Dockerfile.runtime can add the host-built binary to it.
#
# Cached: when an image with this tag and the same package list already
# exists, nothing is done (a few ms). `--force` rebuilds.
# Needs root (debootstrap, chroot) and http://deb.debian.org.
set -euo pipefail

TAG="${SHOAL_BASE_IMAGE:-shoal-base:bookworm}"
MIRROR="${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# Everything the runtime needs beyond debootstrap's minbase. Changing this
# list changes the hash below, so the cached image is rebuilt.
PACKAGES=(ca-certificates ffmpeg iproute2 iptables libstdc++6)
HASH="$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)"

force=0
[ "${1:-}" = "--force" ] && force=1

if [ "$force" = 0 ] && have="$(docker image inspect -f '{{ index .Config.Labels "org.shoal.base.hash" }}' "$TAG" 2>/dev/null)" \
  && [ "$have" = "$HASH" ]; then
  echo "build-base: $TAG is up to date (packages hash $HASH); skipping debootstrap"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "build-base: debootstrap needs root; run with sudo" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-base: installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

start=$(date +%s)
ROOTFS="$(mktemp -d /var/tmp/shoal-base.XXXXXX)"
cleanup() {
  # Unmount anything left mounted under the rootfs before deleting it.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true
  done
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

echo "build-base: debootstrap $SUITE (minbase) into $ROOTFS"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
  tail -30 "$ROOTFS.log" >&2
  echo "build-base: debootstrap failed (full log: $ROOTFS.log)" >&2
  exit 1
}
rm -f "$ROOTFS.log"

cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
# Like debian:bookworm-slim: no docs, man pages or locales in the image.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"

echo "build-base: installing ${PACKAGES[*]}"
# No service may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
chroot "$ROOTFS" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends ${PACKAGES[*]} && apt-get clean" >"$ROOTFS.log" 2>&1 || {
  tail -30 "$ROOTFS.log" >&2
  echo "build-base: apt-get install in the rootfs failed (full log: $ROOTFS.log)" >&2
  exit 1
}
rm -f "$ROOTFS.log" "$ROOTFS/usr/sbin/policy-rc.d"
umount -l "$ROOTFS/proc"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* "$ROOTFS"/var/log/*.log
: >"$ROOTFS/etc/resolv.conf"

echo "build-base: docker import as $TAG"
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
  --change "LABEL org.shoal.base.hash=$HASH" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  - "$TAG" >/dev/null
echo "build-base: built $TAG in $(($(date +%s) - start)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
