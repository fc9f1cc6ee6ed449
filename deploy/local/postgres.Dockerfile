# Local stand-in for the official postgres image (scripts/compose-check.sh; no registry here):
# Debian's PostgreSQL, with the environment the official image reads (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB), the data in /var/lib/postgresql/data and pg_isready.
# PGPORT sets the port; POSTGRES_LISTEN the addresses (default: all).
ARG BASE=nads-local/debian:bookworm
FROM ${BASE}
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/nads.conf \
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
