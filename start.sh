#!/usr/bin/env bash
# Start the explorer: installs what it needs into .venv on first use, then runs Streamlit.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/streamlit ] || [ requirements.txt -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  touch .venv/.installed
fi
exec .venv/bin/streamlit run app.py "$@"
