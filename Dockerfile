# Hugging Face Space (Docker SDK) for the induction heads explorer; README.md's front matter says sdk: docker,
# app_port: 8501. Locally: docker build -t icl-explorer . && docker run --rm -p 8501:8501 icl-explorer
FROM python:3.11-slim

# Spaces run the container as uid 1000. The app's code, its packages and checkpoints/ belong to root and are
# read-only to that user (a bug or a hostile input cannot change what the next visitor runs); it writes only
# under ICL_DATA_DIR (trained runs, jobs, imports) and HOME (the Hub's cache).
RUN useradd --create-home --uid 1000 user
ENV HOME=/home/user \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ICL_DATA_DIR=/home/user/data \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
WORKDIR /app

# requirements.txt pins torch==2.13.0; PyPI's Linux wheel of it is the CUDA build (gigabytes). The extra index
# offers 2.13.0+cpu, which also satisfies the pin and which pip prefers: a small CPU-only torch for CPU Spaces.
COPY requirements.txt .
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY . .
# Bytecode compiled now, as root: the server reads it and, with PYTHONDONTWRITEBYTECODE, never writes any.
RUN python -m compileall -q /app && chmod -R a-w,a+rX /app \
    && mkdir -p "$ICL_DATA_DIR" && chown user:user "$ICL_DATA_DIR"
USER user

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; r = urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4); sys.exit(0 if r.read().strip() == b'ok' else 1)"

CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true", "--server.fileWatcherType=none", "--client.toolbarMode=viewer"]
