#!/bin/bash
# `make demo`: the whole platform on one machine (127.0.0.0/8 only), then an incident as a 112 centre works it.
#
# Starts Mosquitto, the Ceph S3 gateway, three districts of simulated cameras at their real positions around
# Ahyeon hill on Sinchon-ro, where Mapo, Seodaemun and Jung meet (camsim --near), one district agent each, the
# collector (the /v1 API with a development identity provider and the example agency policy) and a
# Prometheus with the project's rules. Then deploy/dev/demo_walkthrough.py plays the 112 centre: an incident
# at that place, the cameras around it across the three districts, a clip from each district, downloaded
# through its presigned URL and decoded, the 119 centre refused, the audit records and Prometheus' view.
#
# Keeps running on a terminal until Ctrl-C; with DEMO_EXIT=1 (or without a terminal) it stops after the
# walkthrough. Logs and configuration stay in $DEMO_DIR (default /tmp/cctv-demo); a previous demo there is
# stopped first.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/.venv/bin"
DEMO=${DEMO_DIR:-/tmp/cctv-demo}
DEV="$ROOT/deploy/dev"
DISTRICTS=(mapo seodaemun jung)
CAMERAS=2                         # per district, on its positions nearest the scene, all H.264
SCENE_LAT=37.5595 SCENE_LON=126.9615
SCENE="Sinchon-ro at Ahyeon hill (신촌로, 북아현동), where Mapo, Seodaemun and Jung meet"
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
answers() { curl -sf -o /dev/null "$1"; }

if [ -d "$DEMO" ]; then  # a previous demo in this directory: stop what it left
    for pidfile in "$DEMO"/*.pid; do [ -e "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
    "$DEV/mosquitto.sh" stop "$DEMO/mqtt" >/dev/null 2>&1 || true
    "$DEV/ceph-s3.sh" stop "$DEMO/s3" >/dev/null 2>&1 || true
fi
rm -rf "$DEMO"
mkdir -p "$DEMO/agent-keys"
trap stop_all EXIT
trap 'echo; echo "demo: stopping (logs and configuration stay in $DEMO)"; exit 0' INT TERM

start() {  # start NAME COMMAND...: in the background, stderr to NAME.log, pid in NAME.pid
    local name=$1
    shift
    "$@" 2>"$DEMO/$name.log" &
    PIDS+=($!)
    echo $! >"$DEMO/$name.pid"
}

echo "== Seoul CCTV sharing, a local stack on 127.0.0.0/8 (logs and configuration: $DEMO)"
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
s3.create_bucket(Bucket="cctv-audit", ObjectLockEnabledForBucket=True)  # audit checkpoints, write-once
PY

echo "== three districts of simulated cameras at their real positions around $SCENE"
ONVIF_PORT=$(free_port) RTSP_PORT=$(free_port) WSD_PORT=$(free_port)
for i in "${!DISTRICTS[@]}"; do
    d=${DISTRICTS[$i]}
    mkdir -p "$DEMO/$d"
    start "camsim-$d" "$BIN/cctv-camsim" run --district "$d" --cameras "$CAMERAS" --near "$SCENE_LAT,$SCENE_LON" --codec h264 \
        --base-ip "127.77.$((i + 1)).1" --onvif-port "$ONVIF_PORT" --rtsp-port "$RTSP_PORT" --wsd-port "$WSD_PORT" \
        --no-multicast --control-port 0 --write-ledger "$DEMO/$d/ledger.csv" --secrets-out "$DEMO/$d/secrets.toml" \
        >"$DEMO/camsim-$d.jsonl"
done
for d in "${DISTRICTS[@]}"; do
    wait_for 60 "the $d simulator" grep -q '"ready"' "$DEMO/camsim-$d.jsonl"
    "$BIN/python" -c 'import csv, sys
for r in csv.DictReader(open(sys.argv[1], encoding="utf-8")):
    print("   %-16s %s, %s  %s" % (r["camera_id"], r["lat"], r["lon"], r["address_text"]))' "$DEMO/$d/ledger.csv"
done

# A development identity provider (a local key and its JWKS): production trusts the agencies' own.
"$BIN/cctv-collector" token jwks --key "$DEMO/idp.key" >"$DEMO/jwks.json" 2>/dev/null
HTTP_PORT=$(free_port) METRICS_PORT=$(free_port) PROM_PORT=$(free_port)
cat >"$DEMO/collector.toml" <<TOML
collector_id = "demo-collector"
metrics_port = $METRICS_PORT
[mqtt]
host = "$MQTT_HOST"
port = $MQTT_PORT
[store]
url = "sqlite:///$DEMO/index.db"
[http]
port = $HTTP_PORT
[access]
jwks_file = "$DEMO/jwks.json"
issuer = "dev-idp"
audience = "cctv-platform"
policy_file = "$ROOT/deploy/policy.example.toml"
[commands]
key_file = "$DEMO/commands.key"
[platform]
agent_keys_dir = "$DEMO/agent-keys"
nearest_refresh_s = 0.5
[s3]
endpoint_url = "$S3_ENDPOINT"
region = "$S3_REGION"
bucket = "cctv-evidence"
access_key = "$S3_ACCESS_KEY"
secret_key = "$S3_SECRET_KEY"
[audit]
bucket = "cctv-audit"
key_path = "$DEMO/audit-key.pem"
checkpoint_interval_s = 5.0
retention_days = 365
TOML
chmod 600 "$DEMO/collector.toml"
# Each district trusts the collector's command key; the collector trusts each agent's manifest key.
"$BIN/cctv-collector" commands public-key --config "$DEMO/collector.toml" >"$DEMO/collector-commands.pem" 2>/dev/null
AGENT_TARGETS=()
for i in "${!DISTRICTS[@]}"; do
    d=${DISTRICTS[$i]}
    port=$(free_port)
    AGENT_TARGETS+=("\"127.0.0.1:$port\"")
    cat >"$DEMO/$d/agent.toml" <<TOML
district = "$d"
agent_id = "$d-demo"
ledger = "$DEMO/$d/ledger.csv"
secrets_file = "$DEMO/$d/secrets.toml"
metrics_port = $port
[mqtt]
host = "$MQTT_HOST"
port = $MQTT_PORT
[onvif]
timeout_s = 3.0
[discovery]
targets = ["127.77.$((i + 1)).0/28"]
port = $WSD_PORT
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
spool_dir = "$DEMO/$d/spool"
key_file = "$DEMO/$d/signing.key"
[commands]
collector_public_keys = ["$DEMO/collector-commands.pem"]
TOML
    chmod 600 "$DEMO/$d/agent.toml"
    "$BIN/cctv-agent" public-key --config "$DEMO/$d/agent.toml" >"$DEMO/agent-keys/$d.pem" 2>/dev/null
done

mkdir -p "$DEMO/prometheus"
cat >"$DEMO/prometheus/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$ROOT/deploy/prometheus/alerts.yml"]
scrape_configs:
  - {job_name: cctv-collector, static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]}
  - {job_name: cctv-agent, static_configs: [{targets: [$(IFS=,; echo "${AGENT_TARGETS[*]}")]}]}
YAML

echo "== starting the collector, an agent per district and Prometheus"
start collector "$BIN/cctv-collector" run --config "$DEMO/collector.toml"
for d in "${DISTRICTS[@]}"; do start "agent-$d" "$BIN/cctv-agent" run --config "$DEMO/$d/agent.toml"; done
start prometheus prometheus --config.file="$DEMO/prometheus/prometheus.yml" \
    --storage.tsdb.path="$DEMO/prometheus/data" --web.listen-address="127.0.0.1:$PROM_PORT"

cameras_arrived() {
    "$BIN/cctv-collector" cameras --config "$DEMO/collector.toml" --json 2>/dev/null |
        "$BIN/python" -c 'import json, sys
rows = json.load(sys.stdin)
sys.exit(0 if len(rows) >= int(sys.argv[1]) and all(r.get("state") not in (None, "unknown") for r in rows) else 1)' \
            $((CAMERAS * ${#DISTRICTS[@]}))
}
wait_for 60 "the cameras in the collector" cameras_arrived
wait_for 30 "the collector's API" answers "http://127.0.0.1:$HTTP_PORT/v1/healthz"
wait_for 30 "Prometheus" answers "http://127.0.0.1:$PROM_PORT/-/ready"
echo "== cameras found across districts (cctv-collector cameras):"
"$BIN/cctv-collector" cameras --config "$DEMO/collector.toml"

# camsim encodes its picture on first use (once per machine, ~10 s; kept in ~/.cache/camsim): wait until the
# nearest camera of each district plays, so that the clips below do not wait for it.
stream_plays() {  # stream_plays DISTRICT: its first camera (the nearest to the scene) answers RTSP
    local url
    url=$("$BIN/python" -c 'import csv, sys, tomllib
row = next(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
password = tomllib.load(open(sys.argv[2], "rb"))["credentials"][row["credentials_ref"]]["password"]
print("rtsp://admin:%s@%s:%s/stream1" % (password, row["host"], row["rtsp_port"]))' \
        "$DEMO/$1/ledger.csv" "$DEMO/$1/secrets.toml")
    ffprobe -v error -rtsp_transport tcp -show_entries stream=codec_name "$url" 2>/dev/null | grep -q codec_name
}
for d in "${DISTRICTS[@]}"; do wait_for 120 "the video of $d's nearest camera" stream_plays "$d"; done
wait_for 10 "the nearest-camera index" grep -q "nearest-camera index rebuilt: $((CAMERAS * ${#DISTRICTS[@]})) cameras" \
    "$DEMO/collector.log"

token() {  # token AGENCY ROLE ACCOUNT: a development token for one hour
    "$BIN/cctv-collector" token issue --key "$DEMO/idp.key" --sub "$3" --agency "$1" --role "$2" \
        --iss dev-idp --aud cctv-platform --ttl 3600
}
POLICE_TOKEN=$(token police-112 operator officer-demo)
FIRE_TOKEN=$(token fire-119 operator firefighter-demo)
AUDIT_TOKEN=$(token audit-office auditor auditor-demo)
export POLICE_TOKEN FIRE_TOKEN AUDIT_TOKEN
"$BIN/python" "$DEV/demo_walkthrough.py" --api "http://127.0.0.1:$HTTP_PORT" \
    --prometheus "http://127.0.0.1:$PROM_PORT" --lat "$SCENE_LAT" --lon "$SCENE_LON" --place "$SCENE"
echo
echo "== the audit chain (cctv-collector audit verify):"
"$BIN/cctv-collector" audit verify --config "$DEMO/collector.toml"
echo
API="http://127.0.0.1:$HTTP_PORT"
echo "== where to look"
if answers "$API/"; then echo "   console       $API/"; fi
echo "   API docs      $API/v1/docs  (OpenAPI document: $API/v1/openapi.json)"
echo "   metrics       http://127.0.0.1:$METRICS_PORT/metrics (collector); the agents' on ${AGENT_TARGETS[*]//\"/}"
echo "   Prometheus    http://127.0.0.1:$PROM_PORT/graph (rules and alerts: /rules, /alerts)"
echo "   dashboards    $ROOT/deploy/dashboards/*.json (import into Grafana with this Prometheus)"
echo "   a ready token (police-112 operator, 1 hour):"
echo "      export TOKEN=$POLICE_TOKEN"
echo "      curl -H \"Authorization: Bearer \$TOKEN\" $API/v1/incidents"
echo "   logs and configuration: $DEMO"
if [ -t 1 ] && [ -z "${DEMO_EXIT:-}" ]; then
    echo "the stack keeps running; Ctrl-C stops it"
    wait
fi
