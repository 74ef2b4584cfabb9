#!/usr/bin/env bash
# Make sure a Redis answers PING on 127.0.0.1:$REDIS_PORT (default 6379): the integration tests and the
# embedded service use a real one. Installs redis-server with apt-get when it is missing, then starts a
# throwaway instance (no persistence) and waits up to 10 s for it.
set -euo pipefail

HOST=127.0.0.1
PORT="${REDIS_PORT:-6379}"

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" == "PONG" ]]
    else
        # No client: speak the inline protocol over bash's /dev/tcp (in a subshell, so a refused
        # connection cannot end this script).
        (
            exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
            printf 'PING\r\n' >&3
            IFS= read -r -t 2 reply <&3 || exit 1
            [[ "${reply%$'\r'}" == "+PONG" ]]
        ) 2>/dev/null
    fi
}

if redis_answers; then
    echo "redis: answering on $HOST:$PORT"
    exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "redis: redis-server is not installed and apt-get is not available; install Redis and re-run" >&2
        exit 1
    fi
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "redis: installing redis-server needs root (or sudo)" >&2; exit 1; }
        sudo=(sudo)
    fi
    echo "redis: installing redis-server with apt-get"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
fi

echo "redis: starting redis-server on $HOST:$PORT"
redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no

for _ in $(seq 1 20); do
    if redis_answers; then
        echo "redis: answering on $HOST:$PORT"
        exit 0
    fi
    sleep 0.5
done
echo "redis: started redis-server but nothing answered PING on $HOST:$PORT within 10 s (port taken by something else?)" >&2
exit 1
