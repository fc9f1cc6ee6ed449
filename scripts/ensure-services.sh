#!/usr/bin/env bash
# Makes the services the tests use answer (tests/fixtures.py):
#   PostgreSQL on 127.0.0.1:5432, role postgres without a password over loopback, database test;
#   Redis on 127.0.0.1:6379.
# Each is installed from the system's packages when missing (scripts/lib/apt.sh), started when
# not running, and configured only where something is missing: a second run changes nothing.
# Exits non-zero, saying why, when a service cannot be made to answer.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/apt.sh

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_HOST=127.0.0.1 REDIS_PORT=6379
say() { echo "ensure-services.sh: $*" >&2; }

as_postgres() {  # runs a command as the postgres system user (local socket, peer auth)
  if [ "$(id -un)" = postgres ]; then "$@"
  elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"
  else sudo -u postgres "$@"
  fi
}

pg_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
pg_test_login() {  # the tests' own login: postgres@127.0.0.1:5432/test, no password
  PGCONNECT_TIMEOUT=5 psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d test \
    -Atc 'select 1' >/dev/null 2>&1
}
pg_server_installed() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

ensure_postgres() {
  if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null ||
     { ! pg_answers && ! pg_server_installed; }; then
    apt_install "the service tests need PostgreSQL" postgresql postgresql-client || return 1
  fi
  if ! pg_answers; then
    start_postgres || return 1
  fi
  pg_test_login && return 0
  # Answers, but the tests cannot log in: add what is missing on this machine's cluster.
  local sql="as_postgres psql -X -q -p $PG_PORT -Atc"
  if ! PGCONNECT_TIMEOUT=5 psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres \
       -Atc 'select 1' >/dev/null 2>&1; then
    local hba
    hba=$($sql 'show hba_file') || { say "cannot reach PostgreSQL as the postgres user"; return 1; }
    say "allowing the postgres role without a password from loopback only ($hba)"
    # First matching line wins: these go on top. Only the postgres role, only 127.0.0.1 and ::1.
    as_postgres sh -c 'f=$1
      { printf "# scripts/ensure-services.sh: the tests log in as postgres over loopback\n"
        printf "host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n"
        cat "$f"; } > "$f.nads-new" && cat "$f.nads-new" > "$f" && rm -f "$f.nads-new"' sh "$hba" ||
      return 1
    $sql 'select pg_reload_conf()' >/dev/null
    sleep 1
  fi
  if [ "$($sql "select count(*) from pg_database where datname = 'test'")" = 0 ]; then
    say "creating database test"
    as_postgres createdb -p "$PG_PORT" test
  fi
  pg_test_login || { say "PostgreSQL answers but postgres@$PG_HOST:$PG_PORT/test cannot log in"; return 1; }
}

start_postgres() {
  if ! command -v pg_lsclusters >/dev/null; then
    say "PostgreSQL is installed but not Debian's cluster tools (pg_ctlcluster): start it on $PG_HOST:$PG_PORT"
    return 1
  fi
  local line version cluster
  line=$(pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p {print $1, $2; exit}')
  if [ -z "$line" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    say "creating the PostgreSQL $version cluster main on port $PG_PORT"
    pg_createcluster -p "$PG_PORT" "$version" main >/dev/null || return 1
    line="$version main"
  fi
  read -r version cluster <<<"$line"
  say "starting PostgreSQL $version/$cluster"
  # Without systemd (a container, CI) pg_ctlcluster must not hand over to systemctl.
  pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
  for _ in $(seq 30); do pg_answers && return 0; sleep 1; done
  say "PostgreSQL $version/$cluster did not start (see /var/log/postgresql/)"
  return 1
}

redis_answers() {  # PING over bash's /dev/tcp: needs no client
  local reply
  { exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 3 reply <&3
  exec 3<&- 3>&-
  [ "${reply%$'\r'}" = "+PONG" ]
}

ensure_redis() {
  redis_answers && return 0
  if ! command -v redis-server >/dev/null; then
    apt_install "the service tests need Redis" redis-server || return 1
    redis_answers && return 0  # the package's own service started it
  fi
  say "starting Redis on $REDIS_HOST:$REDIS_PORT (nothing kept on disk)"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/nads-tests.log || true
  for _ in $(seq 30); do redis_answers && return 0; sleep 1; done
  say "Redis did not start (see /var/log/redis/nads-tests.log)"
  return 1
}

status=0
ensure_postgres || status=1
ensure_redis || status=1
exit $status
