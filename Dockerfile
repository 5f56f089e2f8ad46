# Char-RNN text-generation service: gunicorn + Flask, the shipped model baked in.
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
COPY gunicorn.conf.py ./
COPY weights/ weights/

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin charrnn
USER charrnn

EXPOSE 8000
# No curl in the image: the health check uses the Python that is already there.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py"]
