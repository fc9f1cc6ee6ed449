# Local stand-in for the official redis image (scripts/compose-check.sh; no registry here):
# Debian's redis-server, run as the redis user in /data (where --appendonly writes).
ARG BASE=nads-local/debian:bookworm
FROM ${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis /data
WORKDIR /data
USER redis
CMD ["redis-server"]
