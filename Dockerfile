# toxiserve images, built from this repository's own files (deploy/docker/build.sh builds and tags
# all three; tests/deploy/test_images.py runs them):
#
#   docker build -t toxiserve .                       # the web process (target web, the Procfile's `web`)
#   docker build --target grpc -t toxiserve-grpc .    # the gRPC process (the Procfile's `grpc`)
#   docker build --target batch -t toxiserve-batch .  # batchjob: train, evaluate, score, drift
#
# Each target installs one extra of the same wheel (docs/development.md, Packaging) at the versions
# of constraints.txt: the web image has no scikit-learn, scipy, pandas, pyarrow or joblib. The
# serving images can trace (the tracing extra; off until TOXISERVE_TRACING=true).
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module; the official one by
# default, a debootstrapped bookworm where none can be pulled (build.sh). A pip that needs a CA
# bundle gets it as the build secret `pip_cert` (BuildKit), never baked into a layer.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.cfg setup.py MANIFEST.in README.md constraints.txt gunicorn.conf.py Procfile ./
COPY shared_features/ shared_features/
COPY service/ service/
COPY batchjob/ batchjob/
COPY toxiserve/ toxiserve/
COPY models/ models/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .


FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# A numeric, non-root user. /var/lib/toxiserve is the only place written to (the embedded store and
# the metrics files): mount a volume there and the root filesystem can be read-only. gunicorn's
# worker heartbeat files go to /dev/shm, a tmpfs, for the same reason.
RUN python3 -m venv /opt/venv \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin toxiserve \
    && mkdir -p /var/lib/toxiserve \
    && chown 10001:10001 /var/lib/toxiserve
# The wheel puts the shipped models and gunicorn.conf.py here (setup.py's data_files).
WORKDIR /opt/venv/share/toxiserve
ENV TOXISERVE_MODEL_DIR=/opt/venv/share/toxiserve/models \
    TOXISERVE_STORE_URL=sqlite:////var/lib/toxiserve/store.sqlite3 \
    TOXISERVE_METRICS_DIR=/var/lib/toxiserve/metrics \
    GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm"
VOLUME ["/var/lib/toxiserve"]
# gunicorn stops gracefully on SIGTERM: readiness fails, in-flight requests finish (graceful_timeout).
STOPSIGNAL SIGTERM


FROM runtime AS batch
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheel,source=/src/constraints.txt,target=/constraints.txt \
    --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install -c /constraints.txt "$(ls /wheels/toxiserve-*.whl)[batch]"
USER 10001
CMD ["batchjob", "--help"]


FROM runtime AS grpc
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheel,source=/src/constraints.txt,target=/constraints.txt \
    --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install -c /constraints.txt "$(ls /wheels/toxiserve-*.whl)[grpc,tracing]"
# Serving never unpickles: a model without a data-only scorer is refused at start.
ENV TOXISERVE_ALLOW_PICKLE=false
USER 10001
EXPOSE 50051
CMD ["python", "-m", "service.grpc"]


FROM runtime AS web
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheel,source=/src/constraints.txt,target=/constraints.txt \
    --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install -c /constraints.txt "$(ls /wheels/toxiserve-*.whl)[serve,tracing]"
ENV TOXISERVE_ALLOW_PICKLE=false
USER 10001
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "service:create_app()"]
