# The GLM gateway as a container image.
#
#   docker build -t glm-gateway .
#   docker run --rm -p 8000:8000 -e GATEWAY_API_KEYS=sk-my-client-key \
#     -e SILICONFLOW_API_KEY=sk-... glm-gateway
#
# GATEWAY_API_KEYS is REQUIRED to run this image as it is: the gateway listens on 0.0.0.0 here, and it
# refuses to serve on a non-loopback address without client keys (comma-separated; clients send one as
# `Authorization: Bearer`). The provider keys (POWERTOKENS_API_KEY, TOKEN360_API_KEY,
# SILICONFLOW_API_KEY, TOAPIS_API_KEY, MAXTOKEN_API_KEY) are optional: a provider whose key is unset is
# disabled with a warning. The routing table is /etc/gateway/gateway.yaml (config/gateway.yaml);
# mount your own over it (`-v ./my.yaml:/etc/gateway/gateway.yaml:ro`). /etc/gateway/demo.yaml is
# the keyless table for the simulated upstreams (`gateway simulate`); docker-compose.yml shows both.
# Reload the table without a restart: `docker kill -s HUP <container>`.

# --- builder: build the project's wheel and install it, with its dependencies, into a venv --------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# A real (non-editable) wheel: it must carry the package data (gateway/profiles/*.yaml), which the
# last command checks, so that an image missing the profiles fails here and not at start-up.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && cd / \
 && /opt/venv/bin/python -c "import pathlib, gateway.profiles as p; \
names = sorted(f.name for f in pathlib.Path(p.__file__).parent.glob('*.yaml')); \
assert 'siliconflow.yaml' in names, names; print('profiles in the wheel:', *names)"

# --- runtime: the venv and the config only --------------------------------------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="glm-gateway" \
      org.opencontainers.image.description="OpenAI-compatible gateway for GLM resellers"

RUN groupadd --gid 10001 gateway \
 && useradd --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv
COPY config/gateway.yaml /etc/gateway/gateway.yaml
COPY config/demo.yaml /etc/gateway/demo.yaml

# No PYTHONUNBUFFERED: the gateway flushes its own JSON lines within 200 ms, and an unbuffered
# stdout would cost a write per line on the request path.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    GATEWAY_DEMO_CONFIG=/etc/gateway/demo.yaml \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000

# Numeric, so that orchestrators can check runAsNonRoot.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000

# slim images have no curl: probe with the standard library (a non-2xx answer raises, exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8000'), timeout=4)"]

# Exec form: the gateway is PID 1 and gets SIGTERM (graceful shutdown) and SIGHUP (config reload).
CMD ["gateway", "serve"]
