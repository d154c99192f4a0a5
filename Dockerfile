# veloxy's container image: `docker build -t veloxy .`, then
#   docker run -p 8080:8080 -v "$PWD/veloxy.yaml:/etc/veloxy/veloxy.yaml:ro" veloxy
# Two stages: the build stage compiles the C fast lane (src/veloxy/h1/_fastpath.c) and makes
# wheels of veloxy and its dependencies; the runtime stage installs those wheels and carries
# no compiler. deploy/README.md says how the image was checked (hadolint, in the tests) and
# that it was not built on the machine these files were written on.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# gcc and the C library headers for the fast lane (the Python headers come with the image).
# Versions not pinned: Debian's stable point releases replace them, and a pin would break
# the build at the next one (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# Fails the build, rather than shipping an image without the fast lane, if the extension
# did not compile (setup.py marks it optional for machines without a compiler).
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-index --find-links /wheels /wheels/veloxy-*.whl \
    && python -c "import veloxy.h1._fastpath"

FROM python:${PYTHON_VERSION}-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/veloxy-*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin veloxy
COPY deploy/veloxy.yaml /etc/veloxy/veloxy.yaml
USER 10001:10001
EXPOSE 8080 9901
# 503 once a shutdown began, so a draining container reports unhealthy (Python is the only
# HTTP client in the slim image; urlopen raises on any status but 2xx). A config mounted in
# place of deploy/veloxy.yaml must keep `admin` on port 9901 for this check (and the
# Kubernetes probes) to reach it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)"]
# SIGTERM: stop accepting, let requests in flight finish within limits.shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["veloxy"]
CMD ["serve", "--config", "/etc/veloxy/veloxy.yaml"]
