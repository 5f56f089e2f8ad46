# Char-RNN text-generation service: gunicorn + Flask, the shipped model baked in (the default,
# /app/weights/shakespeare) and every NAME.safetensors + NAME.json of /models served as model NAME
# (CHARRNN_MODELS_DIR; found and reloaded while the server runs). Mount a volume at /models to add
# models (docker-compose.yml, deploy/k8s); unmounted, /models is an empty folder of the container.
#   docker build -t charrnn .                      (torch from PyPI: the CUDA build on Linux x86-64)
#   docker build -t charrnn:cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# A CPU-only wheel index makes a much smaller image; empty = torch from the default index.
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    CHARRNN_WEIGHTS=weights/shakespeare \
    CHARRNN_MODELS_DIR=/models \
    CHARRNN_DATA_DIR=/data \
    CHARRNN_DEVICE=auto

WORKDIR /app

# Dependencies first, in their own layer: code changes rebuild in seconds. The list comes from
# pyproject.toml (runtime + serve extras), so it is written down once.
COPY pyproject.toml ./
RUN set -eux; \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['serve']))" > /tmp/requirements.txt; \
    if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" "$(grep '^torch==' /tmp/requirements.txt)"; fi; \
    pip install -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

COPY model/ model/
COPY service/ service/
COPY jobs/ jobs/
COPY gunicorn.conf.py ./
COPY weights/ weights/

# uid and gid 10001 (deploy/k8s runs the pods as these). /models and /data belong to that user: a
# fresh named volume mounted there takes its owner and mode from the image's folder, so the service
# and the trainer (python -m jobs.runner, from this image) can write models, uploads and the jobs
# database into them.
RUN set -eux; \
    groupadd --gid 10001 charrnn; \
    useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin charrnn; \
    install -d -o charrnn -g charrnn -m 0755 /models /data
USER charrnn

EXPOSE 8000
# No curl in the image: the health check uses the Python that is already there.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py"]
