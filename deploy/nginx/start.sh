#!/bin/sh
# The nginx container's command: the reload watcher in the background, nginx in the
# foreground as the container's main process (so `docker stop` sends nginx its stop
# signal, SIGQUIT: a graceful shutdown).
set -eu
sh /etc/nginx/deploy/reload-watcher.sh /etc/nginx/tracking &
exec nginx -g 'daemon off;'
