#!/usr/bin/env bash
# A whole Lipline deployment on one machine: Prefect server on 127.0.0.1, work pools `cpu` and `gpu`
# (type process), the deployments of deployments/prefect.yaml, one worker per pool.
#
#   infra/local-stack.sh [start]     start everything (idempotent for the pools and deployments)
#   infra/local-stack.sh stop        stop the workers (SIGINT), then the server
#   infra/local-stack.sh status      what is running
#
# Environment (all optional):
#   LIPLINE_STACK_DIR   state dir: PREFECT_HOME, logs, pid files      (default /tmp/lipline-stack)
#   LIPLINE_STACK_PORT  API/UI port                                   (default 4200)
#   LIPLINE_STORE       store root the workers use (and AWS_* for s3://)  (default <stack dir>/store)
#   LIPLINE_CHECKOUT    source checkout the workers run the flows from (default: this repository)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LIPLINE_STACK_DIR:-/tmp/lipline-stack}"
PORT="${LIPLINE_STACK_PORT:-4200}"
BIN="$ROOT/.venv/bin"
PREFECT="$BIN/prefect"
[[ -x "$PREFECT" ]] || PREFECT="$(command -v prefect)"

export PREFECT_HOME="$DIR/prefect-home"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 GX_ANALYTICS_ENABLED=false
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-5}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export LIPLINE_STORE="${LIPLINE_STORE:-$DIR/store}"

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {  # stop_pid PIDFILE SIGNAL TIMEOUT_S
    local file="$1" sig="$2" timeout="$3" pid
    pid_alive "$file" || { rm -f "$file"; return 0; }
    pid="$(cat "$file")"
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq $((timeout * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pid $pid did not stop on SIG$sig within ${timeout}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

start() {
    # Job control on: background jobs get their own process group and keep SIGINT. Without it bash starts them
    # with SIGINT *ignored*, and a Prefect worker or server then never stops on SIGINT.
    set -m
    mkdir -p "$DIR/logs" "$PREFECT_HOME"
    if pid_alive "$DIR/server.pid"; then
        echo "server already running (pid $(cat "$DIR/server.pid"))"
    else
        "$PREFECT" server start --host 127.0.0.1 --port "$PORT" >"$DIR/logs/server.log" 2>&1 &
        echo $! >"$DIR/server.pid"
    fi
    echo -n "waiting for $PREFECT_API_URL/health "
    for _ in $(seq 120); do
        if curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then echo ok; break; fi
        pid_alive "$DIR/server.pid" || { echo; echo "server exited:"; tail -30 "$DIR/logs/server.log"; exit 1; }
        echo -n .; sleep 0.5
    done
    curl -fsS "$PREFECT_API_URL/health" >/dev/null

    for pool in cpu gpu laptop; do   # laptop: previews (its workers run on operators' laptops)
        "$PREFECT" work-pool inspect "$pool" >/dev/null 2>&1 || "$PREFECT" work-pool create "$pool" --type process >/dev/null
    done

    # Deploy from the checkout. LIPLINE_CHECKOUT is unset here on purpose: `prefect deploy` would bake the
    # deployer's value into the pull step; unset, `{{ $LIPLINE_CHECKOUT }}` is resolved by each worker.
    (cd "$ROOT" && env -u LIPLINE_CHECKOUT "$PREFECT" --no-prompt deploy --all \
        --prefect-file deployments/prefect.yaml >"$DIR/logs/deploy.log" 2>&1) \
        || { echo "prefect deploy failed:"; tail -40 "$DIR/logs/deploy.log"; exit 1; }

    export LIPLINE_CHECKOUT="${LIPLINE_CHECKOUT:-$ROOT}"
    for pool in cpu gpu; do
        if pid_alive "$DIR/worker-$pool.pid"; then
            echo "worker $pool already running (pid $(cat "$DIR/worker-$pool.pid"))"; continue
        fi
        limit=()
        [[ "$pool" == gpu ]] && limit=(--limit 1)   # one lip-sync run at a time per GPU
        "$PREFECT" worker start --pool "$pool" --name "$pool-$(hostname)" "${limit[@]}" \
            >"$DIR/logs/worker-$pool.log" 2>&1 &
        echo $! >"$DIR/worker-$pool.pid"
    done
    echo "Prefect UI:  http://127.0.0.1:$PORT"
    echo "API:         export PREFECT_API_URL=$PREFECT_API_URL PREFECT_HOME=$PREFECT_HOME"
    echo "store:       $LIPLINE_STORE"
    echo "logs:        $DIR/logs/"
    echo "run a job:   $PREFECT deployment run localize/localize --params '{\"params\": {\"video_uri\": \"/abs/talk.mp4\", \"audio_uri\": \"/abs/dub.wav\"}}'"
}

stop() {
    # Workers first, with SIGINT (they cancel their poll loops and deregister), then the server.
    for pool in cpu gpu; do stop_pid "$DIR/worker-$pool.pid" INT 20; done
    stop_pid "$DIR/server.pid" INT 20
    echo "stopped"
}

status() {
    for name in server worker-cpu worker-gpu; do
        if pid_alive "$DIR/$name.pid"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; else echo "$name: stopped"; fi
    done
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
