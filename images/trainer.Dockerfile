# syntax=docker/dockerfile:1
# What job pods run (`fedkube aggregator`, `fedkube client`): the `trainer` extra with torch.
# Build from the repository root (see `make images`):
#   docker build -f images/trainer.Dockerfile -t ghcr.io/fedkube/trainer:0.1.0 .
# CUDA variant: the same file with a CUDA build of torch from the PyTorch index (the wheels carry
# the CUDA libraries; the node's driver comes in through the NVIDIA container runtime):
#   docker build -f images/trainer.Dockerfile --build-arg TORCH_CHANNEL=cu128 -t ghcr.io/fedkube/trainer:0.1.0-cu128 .
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
# torch's version is pyproject.toml's pin; the channel is cpu or a CUDA release (cu126, cu128, ...).
ARG TORCH_VERSION=2.13.0
ARG TORCH_CHANNEL=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY trainer/ trainer/
COPY operator/ operator/
COPY images/constraints.txt images/
RUN python -m venv /opt/fedkube \
    && /opt/fedkube/bin/pip install --index-url "https://download.pytorch.org/whl/${TORCH_CHANNEL}" \
        "torch==${TORCH_VERSION}" \
    && /opt/fedkube/bin/pip install --constraint images/constraints.txt '.[trainer]' \
    && /opt/fedkube/bin/pip check \
    && /opt/fedkube/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
# The numeric user the operator's pods run as (operator/fedkube_operator/security.py); no installer left.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 1000 fedkube \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin fedkube
COPY --from=build /opt/fedkube /opt/fedkube
ENV PATH=/opt/fedkube/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 1000:1000
ENTRYPOINT ["fedkube"]
CMD ["--help"]
