#!/bin/bash
# `make demo`: a whole local stack on 127.0.0.0/8 — Mosquitto, the Ceph S3 gateway, a simulated district of
# three cameras (one of them switched off), a district agent and the collector — and the cameras arriving in
# the collector's index. Idempotent: a previous demo in the same directory is stopped first.
# Keeps running on a terminal until Ctrl-C; elsewhere (or with DEMO_EXIT=1) it stops after showing the cameras.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/.venv/bin"
DEMO=${DEMO_DIR:-/tmp/cctv-demo}
DEV="$ROOT/deploy/dev"
PIDS=()

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$DEV/mosquitto.sh" stop "$DEMO/mqtt" >/dev/null 2>&1 || true
    "$DEV/ceph-s3.sh" stop "$DEMO/s3" >/dev/null 2>&1 || true
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    echo "demo: timed out waiting for $what; logs are in $DEMO" >&2
    return 1
}

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_all
rm -rf "$DEMO"
mkdir -p "$DEMO"
trap stop_all EXIT

echo "== starting Mosquitto and the Ceph S3 gateway"
"$DEV/mosquitto.sh" start "$DEMO/mqtt" >/dev/null
"$DEV/ceph-s3.sh" start "$DEMO/s3" >/dev/null
# shellcheck disable=SC1091
. "$DEMO/mqtt/mqtt.env"
# shellcheck disable=SC1091
. "$DEMO/s3/s3.env"
"$BIN/python" - "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_REGION" <<'PY'
import sys, boto3
from botocore.config import Config
endpoint, access, secret, region = sys.argv[1:]
config = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                response_checksum_validation="when_required")
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name=region, config=config)
s3.create_bucket(Bucket="cctv-evidence")
PY

echo "== starting a simulated district (gangnam, 3 cameras, one switched off)"
cat > "$DEMO/scenario.toml" <<TOML
[[fault]]
cameras = "gangnam-00003"
offline = true
TOML
"$BIN/cctv-camsim" run --district gangnam --cameras 3 --base-ip 127.77.0.1 --onvif-port 18081 \
    --rtsp-port 18555 --wsd-port 13703 --no-multicast --control-port 0 --scenario "$DEMO/scenario.toml" \
    --write-ledger "$DEMO/ledger.csv" --secrets-out "$DEMO/secrets.toml" --cache-dir "$DEMO/clips" \
    >"$DEMO/camsim.jsonl" 2>"$DEMO/camsim.log" &
PIDS+=($!)
wait_for 60 "the simulator" grep -q '"ready"' "$DEMO/camsim.jsonl"

cat > "$DEMO/collector.toml" <<TOML
collector_id = "demo-collector"
metrics_port = 0
[mqtt]
host = "$MQTT_HOST"
port = $MQTT_PORT
[store]
url = "sqlite:///$DEMO/index.db"
[http]
port = $(free_port)
TOML
cat > "$DEMO/agent.toml" <<TOML
district = "gangnam"
agent_id = "gangnam-demo"
ledger = "$DEMO/ledger.csv"
secrets_file = "$DEMO/secrets.toml"
metrics_port = 0
[mqtt]
host = "$MQTT_HOST"
port = $MQTT_PORT
[onvif]
timeout_s = 3.0
[discovery]
targets = ["127.77.0.1/30"]
port = 13703
window_s = 1.0
[health]
liveness_interval_s = 5.0
[s3]
endpoint_url = "$S3_ENDPOINT"
region = "$S3_REGION"
bucket = "cctv-evidence"
access_key = "$S3_ACCESS_KEY"
secret_key = "$S3_SECRET_KEY"
[clips]
spool_dir = "$DEMO/spool"
key_file = "$DEMO/signing.key"
TOML
chmod 600 "$DEMO/agent.toml"

echo "== starting the collector and the agent"
"$BIN/cctv-collector" run --config "$DEMO/collector.toml" 2>"$DEMO/collector.log" &
PIDS+=($!)
"$BIN/cctv-agent" run --config "$DEMO/agent.toml" 2>"$DEMO/agent.log" &
PIDS+=($!)

cameras_arrived() {
    "$BIN/cctv-collector" cameras --config "$DEMO/collector.toml" --json 2>/dev/null |
        "$BIN/python" -c 'import json,sys; rows=json.load(sys.stdin); sys.exit(0 if len(rows) >= 3 and all(r.get("state") not in (None, "unknown") for r in rows) else 1)'
}
wait_for 60 "the cameras in the collector" cameras_arrived

echo "== the collector's index (cctv-collector cameras):"
"$BIN/cctv-collector" cameras --config "$DEMO/collector.toml"
echo
echo "logs and configuration: $DEMO"
if [ -t 1 ] && [ -z "${DEMO_EXIT:-}" ]; then
    echo "the stack keeps running; Ctrl-C stops it"
    wait
fi
