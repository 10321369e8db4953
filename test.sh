#!/usr/bin/env bash
# Run the whole test suite: installs Python deps into .venv and Debian's chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/pytest ] || [ requirements-dev.txt -nt .venv/.installed-dev ] || [ requirements.txt -nt .venv/.installed-dev ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "FATAL: $PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.11 is needed (set PYTHON=...)" >&2; exit 1; }
  "$PYTHON" -m venv .venv \
    || { echo "FATAL: '$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  touch .venv/.installed-dev
fi
if [ ! -x /usr/bin/chromium ]; then
  # Browser tests need Debian's chromium (playwright's own browser download is not used); fail loudly without it.
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "FATAL: chromium missing; not root and no sudo to apt-get it" >&2; exit 1; }
    SUDO="sudo"
  fi
  apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"; }
  for attempt in 1 2 3; do
    if apt_get update -qq && apt_get install -y -qq chromium fonts-dejavu-core >/dev/null; then
      break
    fi
    echo "apt-get failed (attempt $attempt of 3)" >&2
    if [ "$attempt" -lt 3 ]; then sleep 10; fi
  done
fi
test -x /usr/bin/chromium || { echo "FATAL: /usr/bin/chromium missing; browser tests cannot run" >&2; exit 1; }
# Ubuntu's "chromium" is a snap stub that cannot run here: check it really starts.
chromium_version="$(timeout 60 /usr/bin/chromium --headless --no-sandbox --disable-gpu --version 2>&1)" \
  || { echo "FATAL: /usr/bin/chromium does not run (a snap stub? install Debian's chromium): $chromium_version" >&2; exit 1; }
.venv/bin/ruff check .
.venv/bin/mypy  # the app's code (pyproject.toml's [tool.mypy] files): ~25 s from a cold cache
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "FATAL: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
