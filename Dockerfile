# The planner worker image (production, with docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md chimera.toml ./
COPY topics topics
COPY processors processors
COPY streams streams
COPY sinks sinks
COPY infra infra
RUN pip install --no-cache-dir ".[triton-client]"
ENTRYPOINT ["chimera"]
CMD ["worker"]
