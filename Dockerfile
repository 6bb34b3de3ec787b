# beacon-proxy container image.
#   docker build -t beacon-proxy .
#   docker run -p 2525:2525 -p 8025:8025 -v bp-data:/var/lib/beacon-proxy beacon-proxy
# Mount a config file at /etc/beacon-proxy/beacon-proxy.toml (see
# config/beacon-proxy.example.toml) to set the upstream and allow_networks:
# by default only loopback clients may relay, so nothing outside the
# container can use it until you say which networks may.
FROM python:3.11-slim

RUN useradd --system --home-dir /var/lib/beacon-proxy --create-home beacon
WORKDIR /src
COPY pyproject.toml README.md ./
COPY beacon_proxy ./beacon_proxy
COPY config ./config
RUN pip install --no-cache-dir . && mkdir -p /etc/beacon-proxy \
    && cp config/beacon-proxy.example.toml /etc/beacon-proxy/beacon-proxy.example.toml

USER beacon
WORKDIR /var/lib/beacon-proxy
VOLUME ["/var/lib/beacon-proxy"]
ENV BEACON_PROXY_SMTP_LISTEN="0.0.0.0:2525" \
    BEACON_PROXY_WEB_LISTEN="0.0.0.0:8025" \
    PYTHONUNBUFFERED=1
EXPOSE 2525 8025
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8025/healthz', timeout=4).status == 200 else 1)"
CMD ["beacon-proxy", "serve"]
