# beacon-proxy container image.
#
#   docker build -t beacon-proxy .
#   docker run -v bp-state:/var/lib/beacon-proxy \
#       -v "$PWD/beacon-proxy.toml:/etc/beacon-proxy/beacon-proxy.toml:ro" \
#       -p 127.0.0.1:2525:2525 -p 8025:8025 -p 127.0.0.1:8026:8026 beacon-proxy
#
# Configuration: /etc/beacon-proxy/beacon-proxy.toml, found by every
# beacon-proxy command in the container (no --config needed).  The image ships
# config/container.toml there: SMTP on 0.0.0.0:2525, the recipient side (/o/,
# /u/, /healthz) on 0.0.0.0:8025, the admin side (/api/v1, /console, /metrics,
# /readyz) on 0.0.0.0:8026, state under /var/lib/beacon-proxy, relaying for
# loopback clients only.  Mount your own file there to replace it (start from that one);
# listen addresses come only from that file or an explicit
# `-e BEACON_PROXY_SMTP_LISTEN=...`, never from this image's environment.
# Publish 8026 on loopback or a private network only.  compose.yaml: with
# PostgreSQL.  docs/operations.md: the rest.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/beacon-proxy \
        --create-home --shell /usr/sbin/nologin beacon
WORKDIR /src
COPY pyproject.toml README.md ./
COPY beacon_proxy ./beacon_proxy
COPY config ./config
RUN pip install --no-cache-dir . && mkdir -p /etc/beacon-proxy \
    && cp config/beacon-proxy.example.toml /etc/beacon-proxy/beacon-proxy.example.toml \
    && cd / && rm -rf /src
COPY config/container.toml /etc/beacon-proxy/beacon-proxy.toml

USER beacon
WORKDIR /var/lib/beacon-proxy
# The spool, the SQLite store (unless PostgreSQL), the generated token secret.
VOLUME ["/var/lib/beacon-proxy"]
ENV PYTHONUNBUFFERED=1
EXPOSE 2525 8025 8026
STOPSIGNAL SIGTERM
# GET /readyz (the store answers, the spool is writable) on the admin listener,
# or on [web] listen when the mounted config has no admin_listen: `beacon-proxy
# ready` reads the same configuration as the relay to find it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["beacon-proxy", "ready", "--timeout", "5"]
CMD ["beacon-proxy", "serve"]
