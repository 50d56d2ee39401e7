# One image for the worker and the server; docker-compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY topics topics
COPY features features
COPY online_models online_models
COPY streams streams
COPY serving serving
COPY homestream homestream
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "streams.worker"]
