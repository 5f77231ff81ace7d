#!/bin/sh
# The nginx container is healthy when nginx answers on its loopback status port and the
# reload watcher has been looping recently (without it certificates are never served).
set -eu
url=${HEALTH_URL:-http://127.0.0.1:8081/healthz}
if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$url"
else  # the Alpine variants of the image have busybox wget
    wget -q -O /dev/null -T 2 "$url"
fi
beat=${HEARTBEAT_FILE:-/tmp/reload-watcher.alive}
age=$(( $(date +%s) - $(stat -c %Y "$beat") ))
if [ "$age" -gt 30 ]; then
    echo "reload watcher silent for ${age}s" >&2
    exit 1
fi
