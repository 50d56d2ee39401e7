# One image for the worker and the server; docker-compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY topics topics
COPY features features
COPY online_models online_models
COPY streams streams
COPY serving serving
COPY homestream homestream
# gcc builds the compiled page core in place (setup.py; without it pages take the Python
# path): editable, as /app, first on the path, holds the sources the worker imports
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir -e . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "streams.worker"]
