#!/usr/bin/env bash
# Build the Space's image from the Dockerfile, from a fresh clone, as the Hub would; serve it as uid 1000; open
# every page in a headless browser; print the figures (build time, image size, time to healthy, server RSS).
# Needs root and podman (Debian: apt-get install -y podman mmdebstrap); not part of CI (minutes, gigabytes).
#
# This machine has no container registry, so python:3.11-slim is stood in for by Debian bookworm's Python 3.11
# (bootstrapped with mmdebstrap), and `podman run` cannot set rlimits in this sandbox, so the image's CMD runs
# in a chroot of the mounted image instead. pip inside the build uses this machine's pip configuration and
# wheel folder (read-only mounts); the PyTorch CPU index is unreachable here, so its host is sent to 127.0.0.1
# and the CPU torch wheel comes from the wheel folder (on a real Space it comes from that index).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=${WORK:-/var/tmp/icl-space-image}
PORT=8501  # the Dockerfile's CMD and the README's app_port
HEALTH_WAIT_S=120  # from the server's start to /_stcore/health saying ok; a Space gives up later, we fail here
TAG=localhost/icl-explorer:space
P=(podman --storage-driver vfs)
BUILD=("${P[@]}" --cgroup-manager cgroupfs build --isolation chroot --network host)

# Everything the steps below need, checked before a build that takes minutes.
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (mounting the image and chroot need it)")
for tool in podman git curl chroot; do command -v "$tool" >/dev/null || missing+=("$tool (apt-get install -y podman curl)"); done
if ! command -v podman >/dev/null || ! podman --storage-driver vfs image exists docker.io/library/python:3.11-slim; then
  command -v mmdebstrap >/dev/null || missing+=("mmdebstrap, to stand in for python:3.11-slim (apt-get install -y mmdebstrap)")
fi
[ -d /opt/wheels ] || missing+=("/opt/wheels (this machine's wheel folder, for the CPU torch wheel)")
[ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c "import playwright" 2>/dev/null \
  || missing+=("$REPO/.venv with playwright, for the page check (python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt)")
[ -x /usr/bin/chromium ] || missing+=("/usr/bin/chromium, for the page check (apt-get install -y chromium)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'space_image.sh: missing, nothing built:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi
mkdir -p "$WORK"

if ! "${P[@]}" image exists docker.io/library/python:3.11-slim; then
  [ -f "$WORK/base.tar" ] || mmdebstrap --variant=minbase \
    --include=python3,python3-pip,python3-venv,ca-certificates bookworm "$WORK/base.tar"
  "${P[@]}" import "$WORK/base.tar" localhost/debian-py311:base
  printf '%s\n' 'FROM localhost/debian-py311:base' \
    'RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip' \
    > "$WORK/Containerfile.base"
  "${BUILD[@]}" -t docker.io/library/python:3.11-slim -f "$WORK/Containerfile.base" "$WORK"
fi

# What the Space builds: the committed files, nothing else.
rm -rf "$WORK/clone" && git clone -q "$REPO" "$WORK/clone"
printf '[global]\nfind-links = /opt/wheels\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$WORK/pip.conf"
start=$(date +%s)
"${BUILD[@]}" -t "$TAG" \
  -v "$WORK/pip.conf:/etc/pip.conf:ro" -v /opt/wheels:/opt/wheels:ro \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --add-host download.pytorch.org:127.0.0.1 "$WORK/clone"
build_s=$(( $(date +%s) - start ))
size=$("${P[@]}" image inspect --format '{{.Size}}' "$TAG")

echo "build: ${build_s} s; image: $(( size / 1000000 )) MB"

# Serve the image's CMD as uid 1000 with the image's environment, in a chroot with /proc, /sys and /dev as a
# container has them (torch reads the CPU's description there).
root=$("${P[@]}" image mount "$TAG")
mount -t proc proc "$root/proc"
for d in sys dev; do mount --rbind "/$d" "$root/$d" && mount --make-rslave "$root/$d"; done
torch=$(find "$root/usr/local/lib" -maxdepth 3 -name 'torch-*.dist-info' | sed -n 's/.*torch-\(.*\)\.dist-info$/\1/p' | head -1)
mapfile -t envs < <("${P[@]}" image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$TAG" | sed '/^$/d')
workdir=$("${P[@]}" image inspect --format '{{.Config.WorkingDir}}' "$TAG")
mapfile -t cmd < <("${P[@]}" image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$TAG" | sed '/^$/d')
start=$(date +%s.%N)
# The image's own CMD (its port: 8501), as the Space runs it.
chroot --userspec=1000:1000 "$root" env -i "${envs[@]}" sh -c 'cd "$0" && exec "$@"' "$workdir" "${cmd[@]}" \
  > "$WORK/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  umount -R "$root/dev" "$root/sys" "$root/proc" || true
  "${P[@]}" image unmount "$TAG" >/dev/null || true
}
trap cleanup EXIT
healthy=0
for _ in $(seq 1 $((HEALTH_WAIT_S * 4))); do
  if [ "$(curl -s "http://127.0.0.1:$PORT/_stcore/health" || true)" = "ok" ]; then healthy=1; break; fi
  kill -0 "$server" 2>/dev/null || break  # the server died: no point waiting
  sleep 0.25
done
healthy_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
if [ "$healthy" != 1 ]; then
  echo "FAIL: the server never answered /_stcore/health within ${HEALTH_WAIT_S} s; its log:" >&2
  tail -n 30 "$WORK/server.log" >&2
  exit 1
fi
echo "torch in the image: ${torch:-unknown}; healthy after ${healthy_s} s"
touch "$WORK/served.marker"
"$REPO/.venv/bin/python" "$REPO/scripts/smoke_pages.py" "http://127.0.0.1:$PORT"
rss_kb=$(ps -o rss= --ppid "$server" -p "$server" | awk '{s += $1} END {print s}')
echo "server RSS after every page: $(( rss_kb / 1024 )) MiB"
# The app's code is read-only to the server's user, and serving every page wrote nothing beside it.
writable=$(chroot --userspec=1000:1000 "$root" find "$workdir" -writable -print | head -5)
written=$(find "$root$workdir" -newer "$WORK/served.marker" -print | head -5)
if [ -n "$writable" ] || [ -n "$written" ]; then
  echo "FAIL: uid 1000 can write under $workdir: ${writable:-none}; written while serving: ${written:-none}" >&2
  exit 1
fi
echo "app code at $workdir: nothing writable by uid 1000, nothing written while serving every page"
trap - EXIT
cleanup
