# easel: the bot (or a worker) on an NVIDIA GPU.
#   docker build -t easel .
#   docker run --gpus all --env-file .env -v easel-data:/data -v easel-models:/models easel
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models \
    EASEL_DATA_DIR=/data \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 easel \
    && mkdir -p /data /models /app \
    && chown easel:easel /data /models /app

WORKDIR /app
RUN python3 -m venv /opt/venv && chown -R easel:easel /opt/venv
ENV PATH=/opt/venv/bin:$PATH

USER easel
# The CUDA build of torch first (its index), then easel with its pinned libraries.
RUN pip install torch --index-url https://download.pytorch.org/whl/cu128
COPY --chown=easel:easel pyproject.toml README.md ./
COPY --chown=easel:easel bot ./bot
COPY --chown=easel:easel engine ./engine
COPY --chown=easel:easel storage ./storage
RUN pip install .

VOLUME ["/data", "/models"]
# /healthz and /readyz live on the metrics port (docs/OPERATIONS.md, "Running for months").
ENV EASEL_METRICS_PORT=9090
EXPOSE 9090
# Alive = the event loop answers.  The first model load can take minutes: start-period covers it.
# (`easel worker` serves no endpoint: docker-compose.yml turns the check off for workers.)
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 CMD ["easel", "health"]
ENTRYPOINT ["easel"]
CMD ["run"]
