# The worker image: `search` with PostgreSQL support. Also runs the MLflow tracking server and
# the storage proxy (`search proxy`).
FROM python:3.11-slim

# OpenCV's wheel links against libGL and GLib even when nothing is displayed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY preprocessing ./preprocessing
COPY models ./models
COPY studies ./studies
COPY search ./search
RUN pip install --no-cache-dir '.[postgres,proxy]'

# Decoded images are cached here; mount a volume so restarts and other workers reuse it.
ENV BLOODSEARCH_CACHE_DIR=/cache TF_CPP_MIN_LOG_LEVEL=3
WORKDIR /work
ENTRYPOINT ["search"]
CMD ["--help"]
