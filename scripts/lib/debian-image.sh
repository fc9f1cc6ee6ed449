# Sourced by scripts/compose-check.sh and scripts/bare-services-check.sh: local Debian base
# images built from Debian's packages (mmdebstrap into a tarball, then `docker import`), for
# machines that reach Debian's package mirror but no image registry.

: "${DEBIAN_SUITE:=bookworm}"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"
: "${DEBIAN_SECURITY_MIRROR:=http://deb.debian.org/debian-security}"

# debian_image TAG [PACKAGE...]: imports a minbase Debian with PACKAGE... as TAG unless TAG exists.
debian_image() {
  local tag=$1; shift
  if docker image inspect "$tag" >/dev/null 2>&1; then
    return 0
  fi
  command -v mmdebstrap >/dev/null || apt_install "cannot build base images" mmdebstrap || return 1
  local tmp include=""
  tmp=$(mktemp -d)
  [ $# -eq 0 ] || include="--include=$(IFS=,; echo "$*")"
  echo "debian-image: building $tag from Debian $DEBIAN_SUITE packages${include:+ ($*)}" >&2
  # shellcheck disable=SC2086
  mmdebstrap --quiet --variant=minbase $include "$DEBIAN_SUITE" "$tmp/rootfs.tar" \
    "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" \
    "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main" \
    "deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main" &&
    docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' "$tmp/rootfs.tar" "$tag" >/dev/null
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
