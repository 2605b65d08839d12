# One image for every pokesaga service and the tracker; the command picks the service:
#   docker run pokesaga pokesaga run pokeball
#
# With a registry: `docker build -t pokesaga .` (python:3.11-slim, wheels from the package index).
# Without one: scripts/images builds a Debian base image and the wheels on the host (wheels/),
# then `docker build --build-arg BASE_IMAGE=pokesaga-base:bookworm`: nothing is fetched.
ARG BASE_IMAGE=python:3.11-slim

# -- every wheel the image installs, pokesaga's own built from this tree --------------------
FROM ${BASE_IMAGE} AS wheels
WORKDIR /src
COPY . .
# Wheels the host built (wheels/, for the base image's Python) are the only source when present.
RUN python3 -m venv /opt/build \
    && if ls wheels/*.whl >/dev/null 2>&1; then source="--no-index --find-links wheels"; else source=""; fi \
    && /opt/build/bin/pip wheel --quiet --disable-pip-version-check $source --wheel-dir /wheels '.[postgres,tls]'

# -- the image: no network from here on ----------------------------------------------------
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/pokesaga/bin:$PATH

COPY --from=wheels /wheels /tmp/wheels
RUN python3 -m venv /opt/pokesaga \
    && /opt/pokesaga/bin/pip install --quiet --no-index --find-links /tmp/wheels 'pokesaga[postgres,tls]' \
    && rm -rf /tmp/wheels \
    && useradd --create-home --uid 10001 pokesaga
COPY deploy/healthcheck.py /usr/local/bin/pokesaga-healthcheck

USER pokesaga
WORKDIR /home/pokesaga
# /metrics and /health/live|ready on every interface of the container, port 9100; the tracker's
# page, API and /metrics on 6066.
ENV POKESAGA_METRICS_PORT=9100 \
    POKESAGA_METRICS_HOST=0.0.0.0 \
    POKESAGA_TRACKER_PORT=6066 \
    POKESAGA_DATA_DIR=/home/pokesaga/data
EXPOSE 9100 6066

# A service answers /health/live, the tracker its page's API; a one-shot command is healthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "/usr/local/bin/pokesaga-healthcheck"]

CMD ["pokesaga", "--help"]
