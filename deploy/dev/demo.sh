#!/bin/bash
# `make demo`: a whole local stack on 127.0.0.0/8 — Mosquitto, the Ceph S3 gateway, a simulated district of
# three cameras (one of them switched off), a district agent and the collector (the platform API with a
# development identity provider and the example agency policy) — the cameras arriving in the collector's
# index, then what the platform is for: a 112 operator opens an incident at a camera's place, sees the
# cameras around it, asks for the nearest camera's clip and gets a presigned URL to play it.
# Idempotent: a previous demo in the same directory is stopped first.
# Keeps running on a terminal until Ctrl-C; elsewhere (or with DEMO_EXIT=1) it stops after the clip.
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
s3.create_bucket(Bucket="cctv-audit", ObjectLockEnabledForBucket=True)  # audit checkpoints, write-once
PY

echo "== starting a simulated district (gangnam, 3 cameras, one switched off)"
cat > "$DEMO/scenario.toml" <<TOML
[[fault]]
cameras = "gangnam-00003"
offline = true
TOML
"$BIN/cctv-camsim" run --district gangnam --cameras 3 --base-ip 127.77.0.1 --onvif-port 18081 \
    --rtsp-port 18555 --wsd-port 13703 --no-multicast --control-port 0 --scenario "$DEMO/scenario.toml" \
    --write-ledger "$DEMO/ledger.csv" --secrets-out "$DEMO/secrets.toml" \
    >"$DEMO/camsim.jsonl" 2>"$DEMO/camsim.log" &
PIDS+=($!)
wait_for 60 "the simulator" grep -q '"ready"' "$DEMO/camsim.jsonl"

# A development identity provider (a local key and its JWKS): production trusts the agencies' own.
"$BIN/cctv-collector" token jwks --key "$DEMO/idp.key" >"$DEMO/jwks.json" 2>/dev/null
HTTP_PORT=$(free_port)
mkdir -p "$DEMO/agent-keys"
cat > "$DEMO/collector.toml" <<TOML
collector_id = "demo-collector"
metrics_port = 0
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
# The district trusts the collector's command key; the collector trusts the agent's manifest key.
"$BIN/cctv-collector" commands public-key --config "$DEMO/collector.toml" >"$DEMO/collector-commands.pem" 2>/dev/null
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
[commands]
collector_public_keys = ["$DEMO/collector-commands.pem"]
TOML
chmod 600 "$DEMO/agent.toml"
"$BIN/cctv-agent" public-key --config "$DEMO/agent.toml" >"$DEMO/agent-keys/gangnam.pem"

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

# -- what the platform is for: a 112 operator, an incident, the cameras around it, a clip to play ----------
# camsim encodes its picture on first use (once per machine, ~10 s; kept in ~/.cache/camsim): wait until the
# camera's video plays, so that the clip below does not wait for it.
stream_plays() {
    ffprobe -v error -rtsp_transport tcp -show_entries stream=codec_name "$1" 2>/dev/null | grep -q codec_name
}
PASSWORD=$("$BIN/python" -c 'import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["credentials"]["cam/gangnam-00002"]["password"])' "$DEMO/secrets.toml")
wait_for 120 "gangnam-00002's video" stream_plays "rtsp://admin:$PASSWORD@127.77.0.2:18555/stream1"
API="http://127.0.0.1:$HTTP_PORT/v1"
json() {  # json PYTHON-CODE < FILE: run the code with the file's JSON as `d`
    "$BIN/python" -c "import json, sys
d = json.load(sys.stdin)
$1"
}
TOKEN=$("$BIN/cctv-collector" token issue --key "$DEMO/idp.key" --sub officer-demo --agency police-112 \
    --role operator --iss dev-idp --aud cctv-platform --ttl 3600)
AUTH="Authorization: Bearer $TOKEN"
read -r LAT LON < <("$BIN/python" -c 'import csv, sys
row = next(r for r in csv.DictReader(open(sys.argv[1], encoding="utf-8")) if r["camera_id"] == "gangnam-00002")
print(row["lat"], row["lon"])' "$DEMO/ledger.csv")
# The two cameras that answered are in the nearest-camera index (the switched-off one never told its place).
wait_for 10 "the nearest-camera index" grep -q 'nearest-camera index rebuilt: 2 cameras' "$DEMO/collector.log"

echo "== a 112 operator (officer-demo, police-112) opens an incident at gangnam-00002's place ($LAT, $LON)"
curl -sf -X POST "$API/incidents" -H "$AUTH" -H 'Content-Type: application/json' -d "{
  \"incident_no\": \"112-demo-$(date +%s)\", \"service\": \"112-video\", \"type\": \"assault\",
  \"lat\": $LAT, \"lon\": $LON, \"occurred_at\": \"$(date -u +%FT%TZ)\", \"radius_m\": 1000,
  \"purpose\": \"identify the assailant\", \"arm_nearest\": 1}" >"$DEMO/incident.json"
INCIDENT=$(json 'print(d["incident"]["incident_id"])' <"$DEMO/incident.json")
echo "incident $INCIDENT; the cameras its grant covers, nearest first:"
json 'for c in d["cameras"]:
    print("  %(camera_id)s  %(distance_m)7.1f m  bearing %(bearing_deg)5.1f  %(district)s  %(state)s  agent online: %(agent_online)s" % c)' \
    <"$DEMO/incident.json"

# The incident armed the nearest camera: the agent keeps its stream (a pre-roll) from now on, so a window
# that starts in a moment is cut from the keyframe before it.
echo "== the nearest camera's clip: 3 seconds, starting in 2"
START=$(date -u -d '+2 sec' +%FT%TZ)
END=$(date -u -d '+5 sec' +%FT%TZ)
curl -sf -X POST "$API/incidents/$INCIDENT/clips" -H "$AUTH" -H 'Content-Type: application/json' \
    -d "{\"nearest\": 1, \"start\": \"$START\", \"end\": \"$END\"}" >"$DEMO/clips.json"
CLIP=$(json 'print(d["clips"][0]["clip_id"])' <"$DEMO/clips.json")
clip_done() {
    curl -sf "$API/clips/$CLIP" -H "$AUTH" >"$DEMO/clip.json" &&
        json 'sys.exit(0 if d["state"] in ("succeeded", "failed") else 1)' <"$DEMO/clip.json"
}
wait_for 60 "clip $CLIP" clip_done
json 'print("clip %(clip_id)s of %(camera_id)s: %(state)s%(why)s" % {**d, "why": " (%s)" % d["reason"] if d["reason"] else ""})
if d["state"] == "succeeded":
    print("  source %(source)s, %(size_bytes)s bytes, sha256 %(sha256)s, manifest verified: %(manifest_verified)s" % d)
    print("  play it until %(expires_at)s: %(url)s" % d["playback"])
sys.exit(0 if d["state"] == "succeeded" else 1)' <"$DEMO/clip.json"
echo
echo "== every step is on record (cctv-collector audit verify):"
"$BIN/cctv-collector" audit verify --config "$DEMO/collector.toml"
echo
echo "== the operator's console: http://127.0.0.1:$HTTP_PORT/  (sign in with a token below, valid for an hour)"
echo "  112 operator (officer-demo, police-112):"
echo "    $TOKEN"
for who in "platform-ops platform ops-demo" "audit-office auditor auditor-demo"; do
    read -r agency role sub <<<"$who"
    echo "  $role ($sub, $agency):"
    echo "    $("$BIN/cctv-collector" token issue --key "$DEMO/idp.key" --sub "$sub" --agency "$agency" \
        --role "$role" --iss dev-idp --aud cctv-platform --ttl 3600)"
done
echo
echo "logs and configuration: $DEMO"
if [ -t 1 ] && [ -z "${DEMO_EXIT:-}" ]; then
    echo "the stack keeps running; Ctrl-C stops it"
    wait
fi
