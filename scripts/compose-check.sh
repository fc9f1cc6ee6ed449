#!/usr/bin/env bash
# Builds the images and runs the docker compose stack on this machine, then checks it from
# outside as a user would (deploy/local/check_stack.py). One command, as root:
#   bash scripts/compose-check.sh            # build (cached layers reused), start, check, down -v
#   NADS_CHECK_KEEP=1 bash scripts/compose-check.sh   # leave the stack running afterwards
#   bash scripts/compose-check.sh --build-only        # the images only
# For machines that reach Debian's package mirror and PyPI but no image registry:
# - base images from Debian's packages (mmdebstrap, docker import: scripts/lib/debian-image.sh);
# - Dockerfile.api and Dockerfile.gpu built on a plain Debian + Python 3.11 base (BASE build
#   argument; the worker runs on the CPU here), with this machine's pip configuration and CA
#   certificates passed as build secrets (never stored in an image); local package directories
#   named there (file:// indexes, find-links) are served to the build on 127.0.0.1 only;
# - stand-ins for the postgres, redis and flower images (deploy/local/*.Dockerfile);
# - every container on the host's network, on loopback only (deploy/local/docker-compose.host.yml).
# dockerd must run with --bridge=none --iptables=false (this script starts it so when no daemon
# answers). Timings and image sizes go to $NADS_CHECK_DIR/report.txt (default var/compose-check).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/apt.sh
. scripts/lib/debian-image.sh

ROOT=$PWD
STATE=${NADS_CHECK_DIR:-$ROOT/var/compose-check}
REPORT=$STATE/report.txt
PROJECT=${NADS_CHECK_PROJECT:-nads-check}
mkdir -p "$STATE"
: > "$REPORT"
note() { echo "compose-check: $*" >&2; echo "$*" >> "$REPORT"; }
elapsed() { echo $(( $(date +%s) - $1 )); }
started=$(date +%s)

# --- the engine, the client and the builder -----------------------------------------------
command -v docker >/dev/null || apt_install "the compose check needs docker" docker.io
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || apt_install "the compose check needs dockerd" docker.io
  note "starting dockerd --bridge=none --iptables=false (log: $STATE/dockerd.log)"
  nohup dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    > "$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else
  command -v docker-compose >/dev/null || apt_install "the compose check needs Compose" docker-compose
  COMPOSE=(docker-compose)
fi
# BuildKit (build secrets): buildx where it is installed, else a client with BuildKit built in
# (Debian's docker.io 20.10: /usr/bin/docker).
if docker buildx version >/dev/null 2>&1; then BUILD=(docker buildx build --load)
else
  client=docker
  [ -x /usr/bin/docker ] && client=/usr/bin/docker
  BUILD=(env DOCKER_BUILDKIT=1 "$client" build)
fi
note "docker $(docker version -f '{{.Server.Version}}'), compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || true)), build: ${BUILD[*]}"
[ -x .venv/bin/nads ] || bash scripts/install.sh

# --- build secrets: this machine's pip configuration, local directories served on loopback --
secrets=$STATE/secrets
rm -rf "$secrets" && mkdir -p "$secrets/served"
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
[ -n "$cert" ] || cert=/etc/ssl/certs/ca-certificates.crt
cp "$cert" "$secrets/ca.crt"
port=${NADS_CHECK_INDEX_PORT:-18999}
served() {  # served DIR [SUB]: the URL under which the build sees DIR/SUB of this machine
  local name
  name=$(echo "$1" | tr -c 'A-Za-z0-9\n' _)
  ln -sfn "$1" "$secrets/served/$name"
  echo "http://127.0.0.1:$port/$name/${2:+$2/}"
}
local_urls=() remote_urls=()
for url in $(python3 -m pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple) \
           $(python3 -m pip config get global.extra-index-url 2>/dev/null || true) \
           ${PIP_EXTRA_INDEX_URL:-}; do
  case $url in
    # An index's pages may link to files beside it (../../files/...): its parent is served.
    file://*) path=${url#file://}; path=${path%/}
              local_urls+=("$(served "$(dirname "$path")" "$(basename "$path")")") ;;
    *) remote_urls+=("$url") ;;
  esac
done
links=()
for dir in $(python3 -m pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}; do
  [ -d "$dir" ] && [[ " ${links[*]} " != *" $(served "$dir") "* ]] && links+=("$(served "$dir")")
done
# The local indexes first, then the remote ones (among equal files pip still picks its own: on
# the development machine it fetched torch from PyPI rather than from the local copy).
all=("${local_urls[@]}" "${remote_urls[@]}")
{ echo "[global]"
  echo "index-url = ${all[0]}"
  [ ${#all[@]} -lt 2 ] || echo "extra-index-url = ${all[*]:1}"
  [ ${#links[@]} -eq 0 ] || echo "find-links = ${links[*]}"
  echo "cert = /run/secrets/ca.crt"
  echo "timeout = 180"
} > "$secrets/pip.conf"
python3 -m http.server --bind 127.0.0.1 --directory "$secrets/served" "$port" \
  > "$STATE/index-server.log" 2>&1 &
index_pid=$!
trap 'kill $index_pid 2>/dev/null || true' EXIT
SECRETS=(--secret "id=pip.conf,src=$secrets/pip.conf" --secret "id=ca.crt,src=$secrets/ca.crt")

# --- images ---------------------------------------------------------------------------------
t=$(date +%s)
debian_image nads-local/debian:"$DEBIAN_SUITE"
debian_image nads-local/debian-python:"$DEBIAN_SUITE" python3.11 python3.11-venv ca-certificates
note "base images: $(elapsed "$t") s"
build() {  # build TAG DOCKERFILE CONTEXT [ARGS...]
  local tag=$1 file=$2 context=$3; shift 3
  local t0
  t0=$(date +%s)
  "${BUILD[@]}" --network host --progress plain -t "$tag" -f "$file" "$@" "$context" \
    > "$STATE/build-${tag//\//_}.log" 2>&1 ||
    { tail -n 30 "$STATE/build-${tag//\//_}.log" >&2; note "build of $tag failed"; exit 1; }
  note "built $tag in $(elapsed "$t0") s"
}
PYBASE=nads-local/debian-python:$DEBIAN_SUITE
build nads-local/postgres deploy/local/postgres.Dockerfile deploy/local \
  --build-arg BASE=nads-local/debian:"$DEBIAN_SUITE"
build nads-local/redis deploy/local/redis.Dockerfile deploy/local \
  --build-arg BASE=nads-local/debian:"$DEBIAN_SUITE"
build nads-local/flower deploy/local/flower.Dockerfile deploy/local --build-arg BASE="$PYBASE" \
  "${SECRETS[@]}"
build nads-api Dockerfile.api . --build-arg BASE="$PYBASE" "${SECRETS[@]}"
build nads-worker Dockerfile.gpu . --build-arg BASE="$PYBASE" "${SECRETS[@]}"
kill $index_pid 2>/dev/null || true
for image in nads-local/debian:"$DEBIAN_SUITE" "$PYBASE" nads-api nads-worker nads-local/postgres \
             nads-local/redis nads-local/flower; do
  note "image $image: $(docker image inspect -f '{{.Size}}' "$image" |
                        awk '{printf "%.0f MB", $1 / 1e6}')"
done

[ "${1:-}" != --build-only ] || exit 0

# --- the stack ------------------------------------------------------------------------------
# Compose v1 cannot remove keys in an override: the base file's published ports (no meaning on
# the host network), the worker's NVIDIA device reservation (no GPU here) and the MinIO blob
# service (its image cannot be pulled; the local stack uses the directory store) are dropped from
# the merged file, and so are the build sections (the images are built above, with secrets).
# /metrics needs the operator's token: one for this run, read by check_stack.py too.
export NADS_METRICS_TOKEN=${NADS_METRICS_TOKEN:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
"${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f deploy/local/docker-compose.host.yml \
  config > "$STATE/merged.yml"
.venv/bin/python - "$STATE/merged.yml" "$STATE/compose.yml" "${COMPOSE[*]}" <<'EOF'
import sys

import yaml

config = yaml.safe_load(open(sys.argv[1]))
# No MinIO here (no registry): the local override keeps the directory store (NADS_BLOB_URL="").
for name in ("minio", "minio-init"):
    config["services"].pop(name, None)
config.get("volumes", {}).pop("miniodata", None)
for service in config["services"].values():
    needs = service.get("depends_on")
    if isinstance(needs, dict):
        for name in ("minio", "minio-init"):
            needs.pop(name, None)
    elif isinstance(needs, list):
        service["depends_on"] = [n for n in needs if n not in ("minio", "minio-init")]
for name, service in config["services"].items():
    if service.get("network_mode") != "host":
        sys.exit(f"compose-check: service {name} is not in deploy/local/docker-compose.host.yml")
    service.pop("ports", None)
    service.pop("build", None)
    service.get("deploy", {}).get("resources", {}).pop("reservations", None)
    # Compose v1 hands `systempaths=unconfined` to the daemon, which refuses it ("invalid
    # --security-opt"); docker run and Compose v2 turn it into empty masked paths. Without it the
    # worker runs, but bubblewrap cannot mount a fresh /proc: uploaded models would not run.
    if sys.argv[3] == "docker-compose" and "security_opt" in service:
        service["security_opt"] = [o for o in service["security_opt"]
                                   if o != "systempaths=unconfined"]
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
EOF
t=$(date +%s)
# One BLAS/OpenMP thread here, as in the workers' processes: estimate_nads then gives the same
# last bits as the workers' merge.
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python deploy/local/check_stack.py \
  --project "$PROJECT" --compose-file "$STATE/compose.yml" --compose "${COMPOSE[*]}" \
  --report "$REPORT" ${NADS_CHECK_KEEP:+--keep}
note "stack checks: $(elapsed "$t") s; whole run: $(elapsed "$started") s"
