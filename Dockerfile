# The certstore image: the `certstore` CLI for the certmgr, the per-host agents and the one-shot init
# service of docker-compose.yml. See docs/deploy-docker.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Optional extras, e.g. --build-arg EXTRAS=lexicon for DNS-01 through a dns-lexicon provider.
ARG EXTRAS=""

# The source stays in /opt/certstore and is installed in place (editable): `certstore init` reads the
# design document from design_docs/ next to the packages, which a plain wheel does not carry yet.
WORKDIR /opt/certstore
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY store ./store
COPY design_docs ./design_docs
COPY docker ./docker
RUN pip install -e ".${EXTRAS:+[$EXTRAS]}" \
    && certstore --version

# An unprivileged user; named volumes mounted on these directories start out owned by it.
RUN useradd --system --uid 10001 --home-dir /var/lib/certstore --shell /usr/sbin/nologin certstore \
    && mkdir -p /var/lib/certstore/state /var/lib/certstore/data /run/certstore \
    && chown -R certstore:certstore /var/lib/certstore /run/certstore \
    && chmod 0700 /var/lib/certstore/state
USER certstore
WORKDIR /var/lib/certstore

ENTRYPOINT ["certstore"]
CMD ["--help"]
