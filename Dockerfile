# shoprec CLI + FastAPI gateway image (CPU). Serves the REST API and runs offline jobs
# (pipeline, export, materialize) against the mounted data/ and models/ folders.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# CPU builds of the pinned torch pair keep the image small; the gateway itself never runs torch.
RUN pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
COPY feature_repo ./feature_repo
RUN pip install . && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin shoprec
# Unprivileged: a mounted models/ must be writable by uid 10001 for `shoprec materialize`.
USER shoprec
EXPOSE 8080
CMD ["shoprec", "gateway", "--host", "0.0.0.0", "--port", "8080"]
