# The mg image: the gRPC service, and (same image, other command) the Envoy edge, so both always
# agree on the proto descriptor. Used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY service ./service
COPY proto ./proto
COPY envoy ./envoy
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -e . \
    && VENV=/opt/venv OUT=/app/gen proto/generate.sh
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 8080 50051
CMD ["mg", "serve"]
