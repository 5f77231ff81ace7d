#!/bin/sh
# Runs beside nginx, in its container: reloads nginx when the edge agent asks (its include
# changed: at start, never per certificate), and when the redirectors' addresses change.
#
#   reload-watcher.sh DIR
#
# DIR is where the requests arrive (in compose, the nginx-generated volume, which also
# holds the generated include; with several edges, each edge's own directory).
#
# The edge agent's NGINX_RELOAD_COMMAND (reload-request.sh, installed in the service
# image as nginx-reload-request) writes DIR/reload-request.<id> after it rewrote the
# include, and waits. This loop sees the request, runs `nginx -t` and then
# `nginx -s reload`, and answers DIR/reload-result.<id>: first line `ok` or `failed`,
# then nginx's own output. Requests seen together are answered by one reload. A refused
# configuration is never loaded (nginx keeps serving the previous one) and the agent,
# told `failed`, puts its previous file back.
#
# Environment: NGINX_CMD (default `nginx`; the tests add -p/-c), UPSTREAM_HOSTS
# (space-separated names whose addresses nginx's upstream holds, e.g. `redirector`),
# WATCH_INTERVAL_S (default 0.5), HEARTBEAT_FILE (touched every loop, for the healthcheck).
set -u
dir=${1:?usage: reload-watcher.sh DIR}
nginx_cmd=${NGINX_CMD:-nginx}
interval=${WATCH_INTERVAL_S:-0.5}
heartbeat=${HEARTBEAT_FILE:-/tmp/reload-watcher.alive}
hosts=${UPSTREAM_HOSTS:-}

say() { echo "reload-watcher: $*" >&2; }

# Sets $verdict (ok|failed) and $output.
reload() {
    # shellcheck disable=SC2086  # NGINX_CMD is a command line
    if output=$($nginx_cmd -t 2>&1); then
        # shellcheck disable=SC2086
        if more=$($nginx_cmd -s reload 2>&1); then verdict=ok; else verdict=failed; fi
        output="$output
$more"
    else
        verdict=failed
    fi
}

addresses() {
    for host in $hosts; do
        getent ahostsv4 "$host" | awk '{ print $1 }'
    done | sort -u | tr '\n' ' '
}

known=$(addresses)
say "watching $dir; upstream addresses: ${known:-none}"
loops=0
while :; do
    requests=$(ls "$dir" 2>/dev/null | grep '^reload-request\.' || true)
    if [ -n "$requests" ]; then
        reload
        for request in $requests; do
            id=${request#reload-request.}
            printf '%s\n%s\n' "$verdict" "$output" > "$dir/.reload-result.$id.tmp"
            mv -f "$dir/.reload-result.$id.tmp" "$dir/reload-result.$id"
            rm -f "$dir/$request"
        done
        say "reload $verdict (requests: $(echo $requests | wc -w))"
        [ "$verdict" = ok ] || say "$output"
    fi
    # Every 2 s or so: has the set of redirector addresses changed?
    if [ -n "$hosts" ] && [ $((loops % 4)) -eq 0 ]; then
        now=$(addresses)
        if [ -n "$now" ] && [ "$now" != "$known" ]; then
            reload
            say "upstream addresses now ${now}: reload $verdict"
            [ "$verdict" = ok ] || say "$output"
            known=$now
        fi
    fi
    loops=$((loops + 1))
    echo "$loops" > "$heartbeat"
    if [ $((loops % 120)) -eq 0 ]; then  # answers nobody collected (the asker gave up)
        find "$dir" -maxdepth 1 -name 'reload-result.*' -mmin +10 -delete 2>/dev/null || true
    fi
    sleep "$interval"
done
