# One image for every Chimera process (planner worker, executor, sinks, API): the command picks
# the role (`chimera worker|executor|sink|api`). Used by docker-compose.yml and infra/k8s/.

# The executor's task modules are C compiled to WASI: built here, copied into the image.
FROM python:3.11-slim-bookworm AS modules
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang lld wasi-libc libclang-rt-14-dev-wasm32 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY pyproject.toml README.md ./
COPY executor executor
ENV CHIMERA_WASM_CACHE=/build/wasm
RUN pip install --no-cache-dir "wasmtime==50.0.1" && python -m executor.build

FROM python:3.11-slim-bookworm
WORKDIR /app
RUN useradd --create-home --uid 10001 chimera
COPY pyproject.toml README.md chimera.toml ./
COPY topics topics
COPY processors processors
COPY streams streams
COPY sinks sinks
COPY executor executor
COPY infra infra
RUN pip install --no-cache-dir ".[sinks,executor]"
COPY --from=modules /build/wasm /app/wasm
ENV CHIMERA_WASM_CACHE=/app/wasm \
    CHIMERA_METRICS_PORT=9464
USER chimera
EXPOSE 9464
ENTRYPOINT ["chimera"]
CMD ["worker"]
