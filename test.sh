#!/usr/bin/env bash
# Run the whole test suite: installs Python deps into .venv and Debian's chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pytest ] || [ requirements-dev.txt -nt .venv/.installed-dev ] || [ requirements.txt -nt .venv/.installed-dev ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  touch .venv/.installed-dev
fi
if [ ! -x /usr/bin/chromium ]; then
  # Browser tests need Debian's chromium; fail loudly if it cannot be installed.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
test -x /usr/bin/chromium || { echo "FATAL: /usr/bin/chromium missing; browser tests cannot run" >&2; exit 1; }
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "FATAL: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
