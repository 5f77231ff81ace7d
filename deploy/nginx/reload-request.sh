#!/bin/sh
# The edge agent's NGINX_RELOAD_COMMAND when nginx runs in another container: ask the
# reload-watcher.sh beside nginx to reload, and wait for its answer. The agent asks only
# when its include changed (at start, after a settings change), never per certificate. Installed in the service image as /usr/local/bin/nginx-reload-request.
#
#   nginx-reload-request DIR [DIR...]
#
# Each DIR is a directory one watcher looks at (in compose: the nginx-generated volume).
# Exit status 0 when every nginx reloaded; 1 (with nginx's output) when one refused the
# configuration or did not answer within RELOAD_WAIT_S (default 8: less than the
# agent's 10 s limit on a reload command).
set -u
[ $# -ge 1 ] || { echo "usage: nginx-reload-request DIR [DIR...]" >&2; exit 2; }
wait_s=${RELOAD_WAIT_S:-8}
id="$(uname -n).$$.$(date +%s)"

for dir in "$@"; do
    if ! { printf '%s\n' "$id" > "$dir/.reload-request.$id.tmp" &&
           mv -f "$dir/.reload-request.$id.tmp" "$dir/reload-request.$id"; }; then
        echo "cannot write a reload request in $dir" >&2
        exit 1
    fi
done

deadline=$(( $(date +%s) + wait_s ))
status=0
for dir in "$@"; do
    result="$dir/reload-result.$id"
    while [ ! -f "$result" ] && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.05
    done
    if [ ! -f "$result" ]; then
        rm -f "$dir/reload-request.$id"
        echo "no nginx answered the reload request in $dir within ${wait_s}s" \
             "(is its reload-watcher running?)" >&2
        status=1
        continue
    fi
    verdict=$(head -n 1 "$result")
    if [ "$verdict" != ok ]; then
        echo "nginx watching $dir refused the configuration:" >&2
        tail -n +2 "$result" >&2
        status=1
    fi
    rm -f "$result"
done
exit "$status"
