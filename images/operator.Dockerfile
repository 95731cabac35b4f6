# syntax=docker/dockerfile:1
# The fedkube operator: the base install plus the `operator` extra (Kopf), no torch.
# Build from the repository root (see `make images`):
#   docker build -f images/operator.Dockerfile -t ghcr.io/fedkube/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY trainer/ trainer/
COPY operator/ operator/
COPY images/constraints.txt images/
RUN python -m venv /opt/fedkube \
    && /opt/fedkube/bin/pip install --constraint images/constraints.txt '.[operator]' \
    && /opt/fedkube/bin/pip check \
    && /opt/fedkube/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
# The same numeric user as every fedkube pod (operator/fedkube_operator/security.py); no installer left.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 1000 fedkube \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin fedkube
COPY --from=build /opt/fedkube /opt/fedkube
ENV PATH=/opt/fedkube/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 1000:1000
ENTRYPOINT ["fedkube"]
CMD ["operator", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
