# minifal serving fal's SD-Turbo example on NVIDIA GPUs.
#   docker build -t minifal .
#   docker run --gpus all -p 8080:8080 -v minifal-data:/data minifal
# /data is the shared data dir: compiled kernels, Hugging Face cache, outputs, startup timelines.
# As a Ray worker node of a cluster (docs/ray.md), /data on the cluster's shared filesystem:
#   docker run --gpus all --network host -v /shared/minifal:/data minifal \
#       ray start --address HEAD_IP:6379 --block
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MINIFAL_DATA_DIR=/data \
    PATH=/opt/venv/bin:$PATH

# Python 3.12, and a C compiler: Inductor builds its CPU-side wrappers with it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/minifal
COPY pyproject.toml README.md ./
COPY minifal ./minifal
COPY apps ./apps
# torch first, pinned to a release minifal is tested with; then minifal with the SD and Ray extras.
# hadolint ignore=DL3013
RUN pip install "torch==2.11.*" && pip install ".[sd,ray]"

VOLUME ["/data"]
EXPOSE 8080
CMD ["minifal", "run", "apps/sd_turbo.py", "--host", "0.0.0.0", "--port", "8080"]
