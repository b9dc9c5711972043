# syntax=docker/dockerfile:1
# optimizer on CPU: the web service by default, and every other command (compose.yaml runs tune and worker
# from this image too).
#
#   docker build -t optimizer .
#   docker run --rm -p 8000:8000 optimizer                    # http://localhost:8000/docs
#   docker run --rm -p 8000:8000 -v "$PWD/presets.json:/data/presets.json:ro" optimizer \
#       optimizer serve --host 0.0.0.0 --presets /data/presets.json
#
# Profiles that need network weights (seed, perceptual: AlexNet/VGG16) read them from $TORCH_HOME; mount a
# folder that holds them (see docs/service.md). Nothing is downloaded at run time (OPTIMIZER_ALLOW_DOWNLOAD=0).
FROM python:3.11-slim

# Extras to install: the web service, and PostgreSQL study storage for compose.yaml's tune/worker services.
# Add jxl (imagecodecs) for JPEG XL and full-precision 16-bit colour PNG: --build-arg EXTRAS=service,postgres,jxl
ARG EXTRAS=service,postgres

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPTIMIZER_ALLOW_DOWNLOAD=0 \
    TORCH_HOME=/home/optimizer/.cache/torch

# torch and torchvision come from PyTorch's CPU wheel index: a plain `pip install torch` pulls the CUDA build,
# several GB of GPU libraries this image never uses. They are installed first, in their own layer, so that
# the package's dependencies below find them already satisfied and code changes do not re-download them.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision

WORKDIR /tmp/src
COPY pyproject.toml README.md ./
COPY optimizer ./optimizer
RUN pip install ".[${EXTRAS}]" \
    && python -c "import torch; assert not torch.version.cuda, 'the CUDA build of torch was installed'" \
    && cd / && rm -rf /tmp/src

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin optimizer \
    && mkdir -p /data "$TORCH_HOME/hub/checkpoints" \
    && chown -R optimizer:optimizer /data /home/optimizer/.cache
USER optimizer
WORKDIR /data

EXPOSE 8000
# /health answers as soon as the process serves; start-up (loading models) takes a few seconds.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# Slow or idle clients are bounded by the server (header and body timeouts, a connection cap kept below the
# descriptor limit, memory admission); see docs/service.md for the flags and what a reverse proxy should own.
CMD ["optimizer", "serve", "--host", "0.0.0.0"]
