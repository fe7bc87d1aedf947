#!/usr/bin/env bash
# A throwaway single-node Ceph S3 gateway (mon + one memstore OSD + radosgw) on 127.0.0.1, run as root.
#
#   ceph-s3.sh start DIR    build a cluster in DIR, start it, create an S3 user, write DIR/s3.env
#   ceph-s3.sh stop DIR     stop every daemon started in DIR (by pid) and wait until they are gone
#   ceph-s3.sh status DIR   print each daemon's state; exit 0 when all run, 3 otherwise
#
# Environment: S3_PORT (gateway port; default a free one), CEPH_START_TIMEOUT_S (default 60),
# CEPH_MEMSTORE_BYTES (OSD capacity; objects are held in RAM as they are written; default 8 GiB).
#
# Everything lives in DIR (config, fsid, keyrings, run dir, logs, pid files) and every command gets
# -c DIR/ceph.conf: nothing is read from or written to /etc/ceph or /var/lib/ceph, so two clusters can run side
# by side. There is no ceph-mgr: radosgw needs only the mon (which creates pools and PGs) and the OSD, and
# leaving it out saves memory and seconds. `ceph -s` therefore says "no active mgr" and shows no PG
# statistics; that is expected. Data lives in memory: a stopped cluster cannot be restarted, `start` rebuilds.
set -euo pipefail

DAEMONS=(radosgw osd mon)   # stop order; they start in the reverse order
PY=/usr/bin/python3         # the system interpreter: the ceph CLI depends on it and it starts fast
T0=$EPOCHREALTIME

usage() { echo "usage: $0 {start|stop|status} DIR" >&2; exit 2; }
log() { echo "ceph-s3: $*" >&2; }
elapsed() { "$PY" -c "print(f'{$EPOCHREALTIME - $T0:.1f}')"; }

daemon_log() {  # the log files worth showing when a daemon fails
  case $2 in
    mon) echo "$1/log/mon.out $1/log/mon.a.log" ;;
    osd) echo "$1/log/osd.out $1/log/osd.0.log" ;;
    radosgw) echo "$1/log/radosgw.out $1/log/client.rgw.a.log" ;;
    *) echo "$1/log/$2.out" ;;
  esac
}

pid_of() { [[ -s "$1/pids/$2.pid" ]] && cat "$1/pids/$2.pid"; }

# Alive and ours: the command line names DIR (guards against a recycled pid). A zombie counts as dead: the
# daemons are orphans once this script exits, and here init reaps orphans only every second or so.
alive() {
  local pid=$1 dir=$2 state
  state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

daemon_running() { local pid; pid=$(pid_of "$1" "$2") && alive "$pid" "$1"; }

# Run a daemon in the foreground (-f) in its own session, detached from our stdio (a caller that captures
# our output would otherwise wait for the daemon to exit), and record its pid.
spawn() {
  local dir=$1 name=$2; shift 2
  setsid "$@" </dev/null >"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}

stop_one() {
  local dir=$1 name=$2 pid deadline
  pid=$(pid_of "$dir" "$name") || return 0
  if alive "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while alive "$pid" "$dir" && ((SECONDS < deadline)); do sleep 0.05; done
    if alive "$pid" "$dir"; then
      log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid" "$dir"; do sleep 0.05; done
    fi
  fi
  echo "$pid"
}

stop_all() {
  local dir=$1 name pids=() pid deadline
  for name in "${DAEMONS[@]}"; do
    pid=$(stop_one "$dir" "$name") && [[ -n $pid ]] && pids+=("$pid")
    rm -f "$dir/pids/$name.pid"
  done
  # wait (bounded) for init to reap them, so that `pgrep ceph` is clean when we return
  deadline=$((SECONDS + 5))
  for pid in "${pids[@]}"; do
    while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.05; done
  done
}

fail() {  # fail DIR DAEMON MESSAGE: print the message and that daemon's log tail, stop everything, exit 1
  local dir=$1 daemon=$2 f; shift 2
  log "ERROR: $*"
  for f in $(daemon_log "$dir" "$daemon"); do
    [[ -s $f ]] || continue
    echo "----- tail of $f -----" >&2
    tail -n 30 "$f" >&2
  done
  stop_all "$dir"
  exit 1
}

# Poll a check until it succeeds; fail if the daemon dies or the start deadline passes.
wait_for() {
  local dir=$1 what=$2 daemon=$3; shift 3
  until "$@" >/dev/null 2>&1; do
    daemon_running "$dir" "$daemon" || fail "$dir" "$daemon" "$daemon exited while waiting for $what"
    ((SECONDS < DEADLINE)) || fail "$dir" "$daemon" "timed out after $START_TIMEOUT s waiting for $what"
    sleep 0.1
  done
}

free_ports() {  # print N distinct free TCP ports on 127.0.0.1
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

port_free() { "$PY" -c "import socket; socket.socket().bind(('127.0.0.1', $1))" 2>/dev/null; }

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

write_conf() {
  local dir=$1 mon_port=$2 rgw_port=$3
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $(uuidgen)
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
run dir = $dir/run
pid file =
log file = $dir/log/\$name.log
keyring = $dir/keyring
# keep cephx: with 'auth none' radosgw hangs for 300 s at start
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
# one OSD: pools of size 1 and 8 PGs, no autoscaler, no redundancy warnings
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon allow pool delete = true
# commit map changes every 0.1 s instead of 1 s: radosgw creates six pools at start (12 s -> 2 s)
paxos propose interval = 0.1
debug ms = 0/0
debug mon = 0/0
debug osd = 0/0
debug auth = 0/0
debug monc = 0/0
debug rgw = 1/1

[mon]
mon data = $dir/mon/\$cluster-\$id
admin socket = $dir/run/\$name.asok

[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-8589934592}
admin socket = $dir/run/\$name.asok

[client]
# the CLI and radosgw-admin must not hang forever on a dead mon; no admin socket per CLI call
client mount timeout = 30
rados mon op timeout = 30
admin socket =

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
admin socket = $dir/run/\$name.asok
EOF
}

write_keyrings() {
  local dir=$1
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n client.rgw.a \
    --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
  # the mon imports every entity of its mkfs keyring into its auth database
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
}

start_mon() {
  local dir=$1 mon_port=$2
  monmaptool --create --clobber --fsid "$(awk '/^fsid/ {print $3}' "$dir/ceph.conf")" \
    --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap" --keyring "$dir/mon.keyring" \
    >"$dir/log/mon-mkfs.out" 2>&1 || fail "$dir" mon-mkfs "ceph-mon --mkfs failed"
  spawn "$dir" mon ceph-mon -c "$dir/ceph.conf" -i a -f
}

start_osd() {
  local dir=$1 uuid secret keyring=$1/osd/ceph-0/keyring
  uuid=$(uuidgen)
  secret=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}\n' "$secret" >"$dir/osd-secret.json"
  ceph -c "$dir/ceph.conf" osd new "$uuid" 0 -i "$dir/osd-secret.json" >"$dir/log/osd-new.out" 2>&1 \
    || fail "$dir" mon "'ceph osd new' failed: the mon did not answer"
  mkdir -p "$dir/osd/ceph-0"
  ceph-authtool --create-keyring "$keyring" -n osd.0 --add-key "$secret" >/dev/null
  ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$uuid" --keyring "$keyring" \
    >"$dir/log/osd-mkfs.out" 2>&1 || fail "$dir" osd-mkfs "ceph-osd --mkfs failed"
  spawn "$dir" osd ceph-osd -c "$dir/ceph.conf" -i 0 -f --keyring "$keyring"
}

osd_up() { ceph -c "$1/ceph.conf" osd dump 2>/dev/null | grep -q '^osd\.0 up'; }

http_answers() { curl -s -o /dev/null --max-time 2 "$1"; }

create_user() {  # print the S3 credential lines of a new user
  local dir=$1 access secret
  access=$(random_hex 10 | tr a-f A-F)
  secret=$(random_hex 20)
  radosgw-admin -c "$dir/ceph.conf" user create --uid=harness --display-name="test harness" \
    --access-key="$access" --secret-key="$secret" >"$dir/log/user-create.out" 2>&1 \
    || fail "$dir" user-create "radosgw-admin user create failed"
  printf 'S3_ACCESS_KEY=%s\nS3_SECRET_KEY=%s\n' "$access" "$secret"
}

# Remove what an earlier, stopped cluster left in DIR (only our own files: DIR may hold other things).
clean_state() {
  local dir=$1
  rm -rf "$dir/ceph.conf" "$dir/keyring" "$dir/mon.keyring" "$dir/monmap" "$dir/osd-secret.json" \
    "$dir/s3.env" "$dir/s3.env.tmp" "$dir/mon" "$dir/osd" "$dir/rgw" "$dir/run" "$dir/pids" "$dir/log"
}

count_running() {
  local name n=0
  for name in "${DAEMONS[@]}"; do daemon_running "$1" "$name" && n=$((n + 1)); done
  echo $n
}

cmd_start() {
  local dir=$1 mon_port rgw_port running
  running=$(count_running "$dir")
  if ((running == ${#DAEMONS[@]})) && [[ -s $dir/s3.env ]]; then
    log "already running in $dir ($(grep S3_ENDPOINT "$dir/s3.env"))"
    return 0
  fi
  if ((running > 0)); then
    log "ERROR: a partial cluster runs in $dir; run '$0 stop $dir' first"
    exit 1
  fi
  [[ $(id -u) -eq 0 ]] || { log "ERROR: must run as root"; exit 1; }
  START_TIMEOUT=${CEPH_START_TIMEOUT_S:-60}
  DEADLINE=$((SECONDS + START_TIMEOUT))
  read -r mon_port rgw_port <<<"$(free_ports 2)"
  if [[ -n ${S3_PORT:-} ]]; then
    port_free "$S3_PORT" || { log "ERROR: S3_PORT $S3_PORT is in use on 127.0.0.1"; exit 1; }
    rgw_port=$S3_PORT
  fi
  clean_state "$dir"
  mkdir -p "$dir/run" "$dir/pids" "$dir/log" "$dir/rgw" "$dir/mon"
  write_conf "$dir" "$mon_port" "$rgw_port"
  write_keyrings "$dir"
  start_mon "$dir" "$mon_port"
  start_osd "$dir"
  wait_for "$dir" "osd.0 to be up" osd osd_up "$dir"
  log "mon and osd.0 up after $(elapsed) s; starting radosgw"
  spawn "$dir" radosgw radosgw -c "$dir/ceph.conf" -n client.rgw.a -f
  wait_for "$dir" "radosgw to answer on 127.0.0.1:$rgw_port" radosgw http_answers "http://127.0.0.1:$rgw_port/"
  # boto3 signs with any region and radosgw's default zonegroup is named "default"
  { echo "S3_ENDPOINT=http://127.0.0.1:$rgw_port"; create_user "$dir"; echo "S3_REGION=default"; } \
    >"$dir/s3.env.tmp"
  mv "$dir/s3.env.tmp" "$dir/s3.env"
  log "up after $(elapsed) s: http://127.0.0.1:$rgw_port (credentials in $dir/s3.env)"
}

cmd_stop() {
  stop_all "$1"
  rm -f "$1/s3.env"
  log "stopped ($1)"
}

cmd_status() {
  local dir=$1 name rc=0
  for name in "${DAEMONS[@]}"; do
    if daemon_running "$dir" "$name"; then
      echo "$name: running (pid $(pid_of "$dir" "$name"))"
    else
      echo "$name: stopped"
      rc=3
    fi
  done
  if ((rc == 0)) && [[ -s $dir/s3.env ]]; then grep S3_ENDPOINT "$dir/s3.env"; fi
  return $rc
}

main() {
  [[ $# -eq 2 ]] || usage
  local action=$1 dir
  [[ $action == start ]] && mkdir -p "$2"
  if [[ ! -d $2 ]]; then
    log "no cluster in $2 (no such directory)"
    [[ $action == status ]] && exit 3
    exit 0
  fi
  dir=$(cd "$2" && pwd)
  case $action in
    start) cmd_start "$dir" ;;
    stop) cmd_stop "$dir" ;;
    status) cmd_status "$dir" ;;
    *) usage ;;
  esac
}

main "$@"
