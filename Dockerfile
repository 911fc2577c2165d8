# syntax=docker/dockerfile:1
#
# One image for every orderbot process; the command picks the role:
#   docker run orderbot:local                          -> orderbot server  (HTTP 8080)
#   docker run orderbot:local orderbot worker          -> metrics/health on METRICS_PORT (9101)
#   docker run orderbot:local orderbot outbox-worker   -> metrics/health on METRICS_PORT (9102)
#   docker run orderbot:local orderbot migrate         -> one-shot, applies /app/schema.sql
# For a role other than the server, set HEALTHCHECK_PORT to its METRICS_PORT so
# the image's HEALTHCHECK probes the right port (docker-compose.yml sets its own).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the distribution and its dependencies into a venv ---------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY . /app
RUN pip install /app

# --- runtime: the venv, the source tree (schema.sql) and a non-root user ------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 orderbot \
    && useradd --system --uid 10001 --gid orderbot \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin orderbot

COPY --from=build /opt/venv /opt/venv
# The repository stays at /app: `orderbot migrate` reads /app/schema.sql
# (WORKDIR), and the files are root-owned, so the app cannot modify itself.
COPY --from=build /app /app
WORKDIR /app
# The server's edge spool: its own volume in compose, writable by the app alone.
RUN mkdir -p /var/lib/orderbot/spool && chown -R orderbot:orderbot /var/lib/orderbot
ENV SPOOL_DIR=/var/lib/orderbot/spool

USER orderbot

# server HTTP, worker metrics/health, outbox-worker metrics/health
EXPOSE 8080 9101 9102

# The processes finish in-flight work within SHUTDOWN_TIMEOUT (25 s) of SIGTERM;
# give them more than that (docker stop -t 30 / compose stop_grace_period: 30s).
STOPSIGNAL SIGTERM

# slim has no curl: probe /health with the standard library. Any error or a
# non-2xx answer raises, and the non-zero exit marks the container unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; port = os.environ.get('HEALTHCHECK_PORT') or os.environ.get('HTTP_PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4)"

CMD ["orderbot", "server"]
