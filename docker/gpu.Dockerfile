# The GPU worker image: CUDA runtime, Python 3.11, the package with its `gpu` extra
# (verl 0.9 with vLLM 0.24, which pins torch 2.11 and transformers 5.9; Prefect 3.7.x for fastapi < 0.137).
# Build from the project root:  docker build -f docker/gpu.Dockerfile -t sent-gpu .
# Run with the NVIDIA container toolkit:  docker run --gpus all --ipc=host ... sent-gpu
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SENT_PROJECT_DIR=/workspace \
    PREFECT_LOGGING_EXTRA_LOGGERS=sent,tasks,flows \
    VLLM_WORKER_MULTIPROC_METHOD=spawn

# distribution packages are pinned by the base image's release
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential git \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && useradd --create-home --uid 1000 sent

WORKDIR /opt/sent
COPY pyproject.toml README.md ./
COPY sent ./sent
COPY flows ./flows
COPY tasks ./tasks
# the project itself (its dependencies are bounded in pyproject.toml)
# hadolint ignore=DL3013
RUN pip install ".[gpu,embeddings]"

WORKDIR /workspace
COPY --chown=1000:1000 configs ./configs
COPY --chown=1000:1000 prefect.yaml ./
RUN mkdir -p /workspace/data && chown 1000:1000 /workspace/data
USER 1000:1000
VOLUME ["/workspace/data"]

# a Prefect process worker on the `gpu` pool (PREFECT_API_URL comes from the environment)
CMD ["prefect", "worker", "start", "--pool", "gpu"]
