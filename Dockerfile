# One image for every pokesaga service; the command picks the service:
#   docker run pokesaga pokesaga run pokeball
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The whole tree, less what .dockerignore leaves out: the image holds every package that runs.
COPY . .
RUN pip install '.[postgres]' \
    && rm -rf /src \
    && useradd --create-home --uid 10001 pokesaga

USER pokesaga
WORKDIR /home/pokesaga
# /metrics and /health/live|ready on every interface of the container, port 9100.
ENV POKESAGA_METRICS_PORT=9100 \
    POKESAGA_METRICS_HOST=0.0.0.0 \
    POKESAGA_DATA_DIR=/home/pokesaga/data
EXPOSE 9100

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ['POKESAGA_METRICS_PORT'], timeout=2)"

CMD ["pokesaga", "--help"]
