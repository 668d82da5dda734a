# The Chimera image (production, with docker-compose.yml and infra/k8s): planner worker by default;
# `api`, `executor ...`, `sink all` run the other kinds.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md chimera.toml ./
COPY topics topics
COPY processors processors
COPY streams streams
COPY sinks sinks
COPY infra infra
COPY executor executor
COPY api api
COPY inference inference
COPY triton_models triton_models
# the project itself: every dependency is pinned in pyproject.toml's extras
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[api,executor,sinks,triton-client]'
EXPOSE 8080 9090
ENTRYPOINT ["chimera"]
CMD ["worker"]
