# Local stand-in for the mher/flower image (scripts/compose-check.sh; no registry here): Flower
# from PyPI in a virtualenv on a Debian base with Python 3.11. Build secrets as in Dockerfile.api.
ARG BASE=nads-local/debian-python:bookworm
FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=ca.crt \
    python3.11 -m venv /opt/venv && pip install 'flower>=2,<3' 'celery[redis]>=5.4' \
 && useradd --create-home --uid 1000 flower
USER flower
CMD ["celery", "flower"]
