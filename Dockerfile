# The image of the Python services (writer and aggregator); docker-compose.yml
# picks the process with `command`. Rendered config lives in docker/.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REACTIONS_HOST=0.0.0.0 \
    REACTIONS_PORT=8080

WORKDIR /app
COPY requirements-runtime.txt ./
RUN pip install --no-cache-dir -r requirements-runtime.txt
COPY common ./common
COPY writer ./writer
COPY aggregator ./aggregator
COPY sharding ./sharding

USER nobody
EXPOSE 8080
CMD ["python", "-m", "writer.main"]
