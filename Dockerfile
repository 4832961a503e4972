# syntax=docker/dockerfile:1
# SwapMeter, CPU image: one image for the API, the workers and the migrations
# (`swapmeter api`, `swapmeter worker`, `swapmeter migrate`). No model is baked in: models
# live on a volume (SWAPMETER_MODELS_DIR; `swapmeter models fetch NAME` fills it).
#   docker build -t swapmeter/swapmeter:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with SwapMeter and its dependencies (wheels only, no compiler) --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/swapmeter
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY admin ./admin
COPY billing ./billing
COPY inference ./inference
COPY migrations ./migrations
# A regular (not editable) install: the image needs no source tree. The s3 extra lets
# SWAPMETER_RESULTS_BACKEND=s3 work without another image.
RUN /opt/swapmeter/bin/pip install --no-cache-dir ".[s3]"

# -- runtime: the virtualenv on a slim Python, run as an unprivileged user --
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 swapmeter \
    && useradd --system --uid 10001 --gid swapmeter --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin swapmeter \
    && mkdir -p /var/lib/swapmeter /models \
    && chown swapmeter:swapmeter /var/lib/swapmeter /models
COPY --from=build /opt/swapmeter /opt/swapmeter
# The root filesystem may be read-only (the Helm chart makes it so): nothing is written
# outside /tmp, the data dir and the volumes.
ENV PATH=/opt/swapmeter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SWAPMETER_DATA_DIR=/var/lib/swapmeter \
    SWAPMETER_MODELS_DIR=/models
WORKDIR /var/lib/swapmeter
USER 10001:10001
# 8000: the API (and its /metrics); 9101: a worker's /metrics.
EXPOSE 8000 9101
ENTRYPOINT ["swapmeter"]
CMD ["api"]
