#!/usr/bin/env bash
# The dashboard screenshot in docs/img/dashboard.png, from a real local run:
#   1. the local services (deploy/local.sh up), a synthetic click log and a model trained
#      on it for a minute, published on this run's own topics;
#   2. Prometheus (Debian's prometheus package) scraping two workers every 2 s, with the
#      compose stack's alert rules;
#   3. traffic: the click log replayed at RATE events/s; an A/B experiment (control against
#      the same model re-ranked with MMR) from the first minute; malformed records of three
#      kinds (bad JSON, missing fields, wrong types); a burst at full speed (lag);
#   4. deploy/monitoring/render.py draws the dashboard's panels from that Prometheus.
# Everything this starts is stopped at the end; its files are under var/dashboard/.
#   deploy/monitoring/screenshot.sh [OUT.png]      (about 8 minutes)
#   BUNDLE=DIR deploy/monitoring/screenshot.sh     (publish a bundle trained on the same
#                                                   synthetic world instead of training one)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/img/dashboard.png}
RATE=${RATE:-150}
BIN=.venv/bin
DIR=var/dashboard
PROM_PORT=${PROM_PORT:-9190}
PORTS=(6166 6167)
command -v prometheus >/dev/null || { echo "screenshot: needs prometheus (apt-get install prometheus)" >&2; exit 1; }
rm -rf "$DIR" && mkdir -p "$DIR"
deploy/local.sh up >/dev/null

run=$(date +%s)
export STREAMREC_APP_ID=dash-$run STREAMREC_CLICKS_TOPIC=dash-$run-clicks \
  STREAMREC_DLQ_TOPIC=dash-$run-dlq STREAMREC_MODEL_UPDATES_TOPIC=dash-$run-models \
  STREAMREC_ITEMS_TOPIC=dash-$run-items STREAMREC_IMPRESSIONS_TOPIC=dash-$run-impressions \
  STREAMREC_KEY_PREFIX=dash-$run: STREAMREC_BUNDLE_STORE=$DIR/store STREAMREC_TOPIC_PARTITIONS=4 \
  STREAMREC_REBALANCE_TIMEOUT_S=5 STREAMREC_PRODUCER_MAX_BATCH_BYTES=1

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$BIN"/streamrec generate --out "$DIR/clicks.txt" >/dev/null
if [ -n "${BUNDLE:-}" ]; then
  cp -r "$BUNDLE" "$DIR/bundle"
  "$BIN"/streamrec publish "$DIR/bundle" > "$DIR/train.log" 2>&1
else
  "$BIN"/streamrec train --data "$DIR/clicks.txt" --out "$DIR/bundle" --max-minutes 1 --publish \
    > "$DIR/train.log" 2>&1
fi

targets=$(printf '"127.0.0.1:%s",' "${PORTS[@]}")
cat > "$DIR/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 5s}
rule_files: ["$PWD/deploy/monitoring/prometheus/alerts.yml"]
scrape_configs:
  - job_name: streamrec
    static_configs: [{targets: [${targets%,}]}]
EOF
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$DIR/prometheus.log" 2>&1 &
pids+=($!)

start_worker() {  # start_worker N
  STREAMREC_WORKER_ID=dash-w$1 STREAMREC_WEB_PORT=${PORTS[$1-1]} STREAMREC_DATA_DIR=$DIR/w$1 \
    "$BIN"/streamrec worker --loglevel warning >> "$DIR/worker$1.log" 2>&1 &
  pids+=($!)
}
wait_ready() {  # wait_ready PORT
  for _ in $(seq 120); do
    curl -sf "127.0.0.1:$1/ready" >/dev/null && return 0
    sleep 1
  done
  echo "screenshot: the worker on :$1 did not become ready" >&2
  exit 1
}
start_worker 1
start_worker 2
wait_ready "${PORTS[0]}"
wait_ready "${PORTS[1]}"
start=$(date +%s)

"$BIN"/streamrec replay --data "$DIR/clicks.txt" --rate "$RATE" --limit $((RATE * 420)) \
  --id-prefix "a:" > "$DIR/replay.log" 2>&1 &
replay=$!
pids+=($replay)
sleep 60
version=$(curl -sf "127.0.0.1:${PORTS[0]}/ready" | "$BIN"/python -c 'import json,sys; print(json.load(sys.stdin)["model_version"])')
"$BIN"/streamrec experiment start mmr --arm "control=$version:50" --arm "mmr=$version:50:mmr=0.5" \
  > "$DIR/experiment.log"
sleep 60
"$BIN"/python - <<'EOF'
import asyncio, os
from streams.replay import send_raw
bad = [(b"u1", b"{not json")] * 12 + [(b"u2", b'{"event_id": "x", "user_id": "u2"}')] * 6 \
    + [(b"u3", b'{"event_id": 7, "user_id": "u3", "item_id": "1", "ts": "late"}')] * 4
asyncio.run(send_raw(os.environ.get("STREAMREC_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                     os.environ["STREAMREC_CLICKS_TOPIC"], bad))
EOF
sleep 40
"$BIN"/streamrec replay --data "$DIR/clicks.txt" --limit 20000 --id-prefix "burst:" \
  >> "$DIR/replay.log" 2>&1
sleep 90
kill "$replay" 2>/dev/null || true
"$BIN"/streamrec status > "$DIR/status.txt" || true
"$BIN"/streamrec experiment stop mmr > /dev/null 2>&1 || true
sleep 5  # a last scrape
end=$(date +%s)
"$BIN"/python deploy/monitoring/render.py --prometheus "http://127.0.0.1:$PROM_PORT" \
  --start "$start" --end "$end" --step 4 --rate-interval 20s --out "$OUT"
curl -s "127.0.0.1:$PROM_PORT/api/v1/alerts" > "$DIR/alerts.json" || true
echo "screenshot: $OUT from $start to $end; logs and Prometheus data in $DIR"
