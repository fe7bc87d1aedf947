#!/usr/bin/env bash
# Once, before the first `docker compose -f deploy/compose.yaml up`: everything deploy/compose.yaml mounts
# from deploy/local/ (git ignores it). Run it as root (sudo), so that each secret can belong to the user of
# the container that reads it; it never overwrites what exists, so running it again is safe.
#
#   sudo deploy/compose/setup.sh [OUT_DIR]        # default: deploy/local
#
# Needs openssl and the project's `cctv-collector` on PATH (`pip install .`, or the repository's .venv/bin).
#   tls/                 a CA and the broker's certificate (for the name "mosquitto")
#   mosquitto/acl        the ACL from `cctv-collector broker-acl` for collector-1 and the three districts
#   mosquitto/passwd     the broker's password file; secrets/mqtt/<account> the passwords
#   secrets/             S3, PostgreSQL and Grafana passwords, the collector's command signing key, the
#                        development identity provider's key; jwks.json and collector-commands.pem beside them
set -euo pipefail

OUT=${1:-$(cd "$(dirname "$0")/.." && pwd)/local}
DISTRICTS=mapo,seodaemun,jung
AGENT_UID=10001        # Dockerfile.agent and Dockerfile.collector
MOSQUITTO_UID=1883     # eclipse-mosquitto
GRAFANA_UID=472        # grafana/grafana-oss
S3_ACCESS_KEY=cctv-admin  # deploy/compose/{agent,collector}.toml name it

log() { echo "setup: $*" >&2; }
random() { openssl rand -base64 32 | tr -d '/+=\n'; }
secret() {  # secret FILE VALUE: write once, mode 0600
    [[ -e $1 ]] && return 0
    (umask 077 && printf '%s\n' "$2" >"$1")
    log "created $1"
}

command -v openssl >/dev/null || { log "openssl is missing"; exit 2; }
command -v cctv-collector >/dev/null || { log "cctv-collector is missing from PATH (pip install .)"; exit 2; }
mkdir -p "$OUT"/{tls,mosquitto,secrets/mqtt}
chmod 0700 "$OUT/secrets"

if [[ ! -e $OUT/tls/ca.crt ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=cctv-share CA" \
        -keyout "$OUT/tls/ca.key" -out "$OUT/tls/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=mosquitto" \
        -keyout "$OUT/tls/server.key" -out "$OUT/tls/server.csr" 2>/dev/null
    openssl x509 -req -in "$OUT/tls/server.csr" -CA "$OUT/tls/ca.crt" -CAkey "$OUT/tls/ca.key" \
        -CAcreateserial -days 825 -out "$OUT/tls/server.crt" \
        -extfile <(printf 'subjectAltName=DNS:mosquitto,DNS:localhost,IP:127.0.0.1\n') 2>/dev/null
    rm -f "$OUT/tls/server.csr" "$OUT/tls/ca.srl"
    mkdir -p "$OUT/secrets/ca" && mv "$OUT/tls/ca.key" "$OUT/secrets/ca/ca.key"  # signs nothing at runtime
    log "created the CA and the broker's certificate in $OUT/tls"
fi

cctv-collector broker-acl --districts "$DISTRICTS" --collectors collector-1 --out "$OUT/mosquitto/acl" \
    --passwords-dir "$OUT/secrets/mqtt" --passwd-out "$OUT/mosquitto/passwd"

secret "$OUT/secrets/s3_access_key" "$S3_ACCESS_KEY"
secret "$OUT/secrets/s3_secret_key" "$(random)"
secret "$OUT/secrets/pg_password" "$(random)"
[[ -e $OUT/secrets/pgpass ]] || secret "$OUT/secrets/pgpass" "postgres:5432:cctv:cctv:$(head -n1 "$OUT/secrets/pg_password")"
secret "$OUT/secrets/grafana_admin_password" "$(random)"

# The collector's command signing key (created by the first call) and the public half the agents trust.
COLLECTOR__COMMANDS__KEY_FILE="$OUT/secrets/command_key" cctv-collector commands public-key \
    >"$OUT/collector-commands.pem" 2>/dev/null
# A development identity provider: its key signs test tokens (`cctv-collector token issue --key ...`).
cctv-collector token jwks --key "$OUT/secrets/idp.key" >"$OUT/jwks.json"

if [[ $(id -u) == 0 ]]; then
    chown -R "$AGENT_UID:$AGENT_UID" "$OUT/secrets/mqtt" "$OUT/secrets/s3_secret_key" "$OUT/secrets/pgpass" \
        "$OUT/secrets/command_key"
    chown "$MOSQUITTO_UID:$MOSQUITTO_UID" "$OUT/mosquitto/acl" "$OUT/mosquitto/passwd" "$OUT/tls/server.key"
    chown "$GRAFANA_UID" "$OUT/secrets/grafana_admin_password"
else
    log "not root: the secrets stay yours (mode 0600) and the containers cannot read them; run with sudo"
fi
log "ready: docker compose -f deploy/compose.yaml up -d --build"
