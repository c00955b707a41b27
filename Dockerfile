# syntax=docker/dockerfile:1
#
# The Agora gateway image: `agora` (with the chain extra, to read a real chain
# over JSON-RPC), the default policy bundle, and an `opa` binary for the
# community page's shadow evaluation and dry-run form (OPA processes the
# gateway starts for proposals' bundles, never consulted for enforcement).
# The enforcing OPA runs as a sidecar in Kubernetes (charts/agora-gateway),
# from the same pinned release.
#
#   docker build -t agora-gateway:0.1.0 .
#   docker run --rm -v "$PWD/agora.yaml:/etc/agora/agora.yaml:ro" -p 8080:8080 agora-gateway:0.1.0

# Both stages use the same base, so that the virtualenv built in the first one
# finds its interpreter at the same path in the second.
ARG PYTHON_IMAGE=python:3.11-slim
# The OPA release the project tests with (scripts/install-tools.sh, the chart's sidecar).
ARG OPA_IMAGE=openpolicyagent/opa:1.22.2-static

FROM ${OPA_IMAGE} AS opa

# --- build: a virtualenv with the package and its dependencies ---------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/agora/venv

WORKDIR /src
# uv, pinned with its hashes, installs the dependencies exactly as uv.lock has them.
COPY tools/uv-requirements.txt tools/
RUN pip install --require-hashes -r tools/uv-requirements.txt

# The runtime and the chain extra (to read a real chain over JSON-RPC), nothing for tests;
# the package itself is installed, not linked to /src. Every locked dependency has a wheel
# for linux amd64 and arm64 (--no-build: no compiler, no build scripts of theirs run).
COPY pyproject.toml uv.lock README.md ./
COPY gateway/ gateway/
RUN uv sync --locked --no-editable --extra chain --no-build
ENV PATH=/opt/agora/venv/bin:$PATH

# The installed package (not /src) must hold what governance reads at run time.
RUN cd / && agora --version \
 && python -c "from gateway.chain.artifacts import load_artifact; load_artifact('PolicyRegistry')"

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="agora-gateway" \
      org.opencontainers.image.description="Policy enforcement gateway for OpenAI-compatible model APIs, with OPA" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric user, so that Kubernetes can check runAsNonRoot.
RUN groupadd --system --gid 10001 agora \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/agora --shell /usr/sbin/nologin agora \
 && mkdir -p /etc/agora /var/lib/agora/decisions \
 && chown -R 10001:10001 /var/lib/agora

COPY --from=build /opt/agora/venv /opt/agora/venv
# A static build: no libc needed. policy.opa_binary names it (`opa` on PATH).
COPY --from=opa /opa /usr/local/bin/opa
# The default policy bundle; the chart pins its digest (policy.pinnedDigest).
COPY policies/ /opt/agora/policies/

ENV PATH=/opt/agora/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/agora
EXPOSE 8080

# Kubernetes probes /healthz and /readyz itself (see the chart); this is for
# plain `docker run`: alive means the process answers.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["agora"]
CMD ["serve", "--config", "/etc/agora/agora.yaml"]
