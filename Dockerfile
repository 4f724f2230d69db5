# One image for every part of a HiveMind site: the Celery workers, the bridge,
# this project's Node Pool and Flower. docker-compose.yml picks the command.
#
#   docker build -t hivemind-site:latest .                       # base from a registry
#   docker build --build-arg BASE_IMAGE=hivemind-base-python:bookworm -t hivemind-site:latest .
#
# The base needs python3 with the venv module (Debian bookworm's python3 is 3.11).
# scripts/build-offline-images.sh makes such a base with debootstrap and a wheelhouse
# of the dependencies under build/wheelhouse, so the image builds with no registry and
# no PyPI.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV VIRTUAL_ENV=/opt/hivemind \
    PATH=/opt/hivemind/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HIVEMIND_NODEPOOL_DB=/var/lib/hivemind/nodepool.db

# The services run as this user. Its home holds the Node Pool's database (a named
# volume in compose inherits the owner). The workers also need the group owning the
# host's /var/run/docker.sock: compose adds it with group_add (DOCKER_GID).
# The tunnel's tools (docker-compose.tunnel.yml): the offline base has them already; a
# registry base gets them from Debian's archive.
RUN if ! command -v wireguard-go >/dev/null || ! command -v wg >/dev/null || ! command -v ip >/dev/null; then \
        apt-get update -qq \
     && apt-get install -y -qq --no-install-recommends wireguard-go wireguard-tools iproute2 \
     && rm -rf /var/lib/apt/lists/*; \
    fi

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/hivemind --create-home \
        --shell /usr/sbin/nologin hivemind \
 && python3 -m venv /opt/hivemind

# .dockerignore lets in only the packages, pyproject.toml, README.md and build/wheelhouse.
COPY . /src
RUN set -e; \
    if ls /src/build/wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "installing from the wheelhouse (no index)"; \
        pip install --no-index --find-links /src/build/wheelhouse '/src[gpu,flower]'; \
    else \
        pip install '/src[gpu,flower]'; \
    fi; \
    rm -rf /src; \
    celery --version; hivemind --help >/dev/null

USER hivemind
WORKDIR /var/lib/hivemind
EXPOSE 50051 50053 5555 5001 9808
CMD ["hivemind", "--help"]
