# toxiserve, built from this repository's own files. Linted with hadolint (the tests run it); no
# Docker engine runs on the machines this project is developed on, so the image is linted, not built.
#
#   docker build -t toxiserve .                  # the web process (the Procfile's `web`)
#   docker build --target grpc -t toxiserve-grpc . # the gRPC process (the Procfile's `grpc`)

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and code from the project's own files (setup.cfg pins every version).
COPY setup.cfg setup.py README.md ./
COPY shared_features/ shared_features/
COPY service/ service/
COPY batchjob/ batchjob/
COPY toxiserve/ toxiserve/
RUN pip install --no-cache-dir .

COPY models/ models/
COPY gunicorn.conf.py Procfile ./

# A numeric, non-root user. /var/lib/toxiserve is the only place written to (the embedded store and
# the metrics files): mount a volume there and the root filesystem can be read-only. gunicorn's
# worker heartbeat files go to /dev/shm, a tmpfs, for the same reason.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin toxiserve \
    && mkdir -p /var/lib/toxiserve \
    && chown 10001:10001 /var/lib/toxiserve
ENV TOXISERVE_MODEL_DIR=/app/models \
    TOXISERVE_STORE_URL=sqlite:////var/lib/toxiserve/store.sqlite3 \
    TOXISERVE_METRICS_DIR=/var/lib/toxiserve/metrics \
    GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm"
VOLUME ["/var/lib/toxiserve"]
USER 10001

# gunicorn stops gracefully on SIGTERM: readiness fails, in-flight requests finish (graceful_timeout).
STOPSIGNAL SIGTERM


FROM base AS grpc
EXPOSE 50051
CMD ["python", "-m", "service.grpc"]


FROM base AS web
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "service:create_app()"]
