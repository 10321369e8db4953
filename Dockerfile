# Hugging Face Space (Docker SDK) for the induction heads explorer; README.md's front matter says sdk: docker,
# app_port: 8501. Locally: docker build -t icl-explorer . && docker run --rm -p 8501:8501 icl-explorer
FROM python:3.11-slim

# Spaces run the container as uid 1000: create that user and own everything the app writes.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ICL_DATA_DIR=/home/user/data \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
WORKDIR /home/user/app

# requirements.txt pins torch==2.13.0; PyPI's Linux wheel of it is the CUDA build (gigabytes). The extra index
# offers 2.13.0+cpu, which also satisfies the pin and which pip prefers: a small CPU-only torch for CPU Spaces.
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY --chown=user . .
# User-trained runs, jobs and the Hub cache (ICL_DATA_DIR): writable by uid 1000, ephemeral on a Space.
RUN mkdir -p "$ICL_DATA_DIR"

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; r = urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4); sys.exit(0 if r.read().strip() == b'ok' else 1)"

CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true", "--server.fileWatcherType=none", "--client.toolbarMode=viewer"]
