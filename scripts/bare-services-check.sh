#!/usr/bin/env bash
# Proves scripts/ensure-services.sh on a bare Debian: a fresh minbase container without
# PostgreSQL or Redis runs it twice; the first run must install both from Debian's packages,
# start them and make the tests' login (postgres@127.0.0.1:5432/test, no password) and Redis
# answer; the second must change nothing.
#
# The container has its own network namespace with loopback only (--network none), so its
# PostgreSQL and Redis take 5432 and 6379 without touching the host's. Its apt therefore reads a
# local copy of the Debian packages those installs need, fetched first by a container on the
# host network (apt-get install --download-only); ensure-services.sh runs apt-get update and
# apt-get install against it as against any mirror. Needs docker and mmdebstrap (root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/apt.sh
. scripts/lib/debian-image.sh

IMAGE=${NADS_BARE_IMAGE:-nads-local/debian:$DEBIAN_SUITE}
debian_image "$IMAGE"
repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT

echo "bare-services-check: fetching the packages into a local apt repository" >&2
docker run --rm --network host -v "$repo:/repo" "$IMAGE" bash -c '
  set -e
  apt-get update -q >/dev/null
  apt-get install -y -q apt-utils >/dev/null
  apt-get install -y -q --download-only postgresql postgresql-client redis-server >/dev/null
  cp /var/cache/apt/archives/*.deb /repo/
  cd /repo && apt-ftparchive packages . > Packages'

echo "bare-services-check: running scripts/ensure-services.sh twice in a bare container" >&2
docker run --rm --network none -v "$repo:/repo:ro" -v "$PWD/scripts:/src/scripts:ro" "$IMAGE" bash -c '
  set -u
  echo "deb [trusted=yes] file:/repo ./" > /etc/apt/sources.list
  rm -f /etc/apt/sources.list.d/*
  for tool in psql pg_isready redis-server redis-cli; do
    if command -v $tool >/dev/null; then echo "not bare: $tool is installed"; exit 1; fi
  done
  snapshot() {  # what a second run must leave as it is
    dpkg-query -W -f="\${Package} \${Version}\n" | sort | md5sum
    md5sum /etc/postgresql/*/main/pg_hba.conf /etc/postgresql/*/main/postgresql.conf
    runuser -u postgres -- psql -XAtc "select datname from pg_database order by 1" | tr "\n" " "; echo
    echo "postmaster pid $(head -n1 /var/lib/postgresql/*/main/postmaster.pid)"
    echo "redis-server $(grep -lx redis-server /proc/[0-9]*/comm 2>/dev/null)"
  }
  start=$(date +%s)
  echo "--- first run"
  bash /src/scripts/ensure-services.sh; echo "exit $?"
  echo "first run: $(( $(date +%s) - start )) s"
  psql -w -X -h 127.0.0.1 -U postgres -d test -Atc "select current_user, current_database(), version()" ||
    { echo "FAIL: the tests cannot log in"; exit 1; }
  redis-cli -h 127.0.0.1 -p 6379 ping
  before=$(snapshot)
  echo "--- second run"
  out=$(bash /src/scripts/ensure-services.sh 2>&1); rc=$?
  echo "exit $rc, output: \"$out\""
  after=$(snapshot)
  if [ "$rc" -ne 0 ] || [ -n "$out" ] || [ "$before" != "$after" ]; then
    echo "FAIL: the second run changed something"; diff <(echo "$before") <(echo "$after"); exit 1
  fi
  echo "$after" | sed "s/^/unchanged: /"
  echo "PASS"'
