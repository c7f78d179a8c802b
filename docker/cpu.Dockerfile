# The orchestrator / CPU worker image: the sent package with Prefect and MLflow, CPU-only torch.
# Build from the project root:  docker build -f docker/cpu.Dockerfile -t sent-cpu .
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.11.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SENT_PROJECT_DIR=/workspace \
    PREFECT_LOGGING_EXTRA_LOGGERS=sent,tasks,flows

# git: the commit of a checkout is recorded in MLflow when the project is mounted as one;
# distribution packages are pinned by the base image's release
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 sent

# CPU build of torch first, so that the package's dependencies do not pull a CUDA build
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

WORKDIR /opt/sent
COPY pyproject.toml README.md ./
COPY sent ./sent
COPY flows ./flows
COPY tasks ./tasks
# the project itself (its dependencies are bounded in pyproject.toml)
# hadolint ignore=DL3013
RUN pip install ".[embeddings]"

WORKDIR /workspace
COPY --chown=1000:1000 configs ./configs
COPY --chown=1000:1000 prefect.yaml ./
# /mlflow: the MLflow server's volume in compose.yaml (a named volume takes this directory's owner)
RUN mkdir -p /workspace/data /mlflow && chown 1000:1000 /workspace/data /mlflow
USER 1000:1000
VOLUME ["/workspace/data"]

# a Prefect process worker on the `cpu` pool (PREFECT_API_URL comes from the environment)
CMD ["prefect", "worker", "start", "--pool", "cpu"]
