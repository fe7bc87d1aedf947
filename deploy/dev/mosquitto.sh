#!/usr/bin/env bash
# A throwaway Mosquitto broker on 127.0.0.1 with its config, persistence, log and pid file in DIR.
#
#   mosquitto.sh start DIR [PORT]   write DIR/mosquitto.conf, start the broker, write DIR/mqtt.env
#                                   (with DIR/tls/{ca.crt,server.crt,server.key} present, also a TLS
#                                   listener on a free port, written to mqtt.env as MQTT_TLS_PORT)
#   mosquitto.sh stop DIR           SIGTERM the broker (it saves its database) and wait for it to exit
#   mosquitto.sh status DIR         exit 0 when it runs, 3 otherwise
#
# Starting again in the same DIR (after stop, or after the broker was killed) keeps retained messages and
# persistent sessions: the database in DIR is saved every second and on exit.
set -euo pipefail

usage() { echo "usage: $0 {start DIR [PORT]|stop DIR|status DIR}" >&2; exit 2; }
log() { echo "mosquitto: $*" >&2; }

pid_of() { [[ -s "$1/mosquitto.pid" ]] && cat "$1/mosquitto.pid"; }

# Alive and ours (its command line names DIR: guards against a recycled pid). A zombie counts as dead:
# the broker is an orphan once this script exits and init reaps orphans only every second or so.
alive() {
  local pid=$1 dir=$2 state
  state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

running() { local pid; pid=$(pid_of "$1") && alive "$pid" "$1"; }

# Gone or a zombie. For the process this script has just started: its command line may not name DIR yet
# (setsid has forked but not yet run mosquitto), so alive() would call a starting broker dead.
exited() {
  local state
  state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 0
  [[ $state == Z ]]
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_conf() {
  local dir=$1 port=$2
  cat >"$dir/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
# run as root would otherwise switch to user "mosquitto", which cannot write DIR
user root
persistence true
persistence_location $dir/
persistence_file mosquitto.db
# save every second, so retained messages and queued sessions survive even SIGKILL
autosave_interval 1
# the default (1000 per client) drops messages under load; 0 in-flight means no limit (v5 clients still
# bound it with their Receive Maximum)
max_queued_messages 100000
max_inflight_messages 0
set_tcp_nodelay true
log_dest file $dir/mosquitto.log
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
  if [[ -n ${3:-} ]]; then
    cat >>"$dir/mosquitto.conf" <<EOF
listener $3 127.0.0.1
cafile $dir/tls/ca.crt
certfile $dir/tls/server.crt
keyfile $dir/tls/server.key
EOF
  fi
}

fail() {
  log "ERROR: $*"
  local f
  for f in "$1/mosquitto.out" "$1/mosquitto.log"; do
    [[ -s $f ]] || continue
    echo "----- tail of $f -----" >&2
    tail -n 20 "$f" >&2
  done
}

cmd_start() {
  local dir=$1 port=${2:-} tls_port="" pid deadline
  if running "$dir"; then
    log "already running in $dir (pid $(pid_of "$dir"), $(grep MQTT_PORT "$dir/mqtt.env"))"
    return 0
  fi
  [[ -n $port ]] || port=$(free_port)
  if accepts "$port"; then
    log "ERROR: something already listens on 127.0.0.1:$port"
    exit 1
  fi
  rm -f "$dir/mqtt.env"
  if [[ -s $dir/tls/server.crt ]]; then tls_port=$(free_port); fi
  write_conf "$dir" "$port" "$tls_port"
  # foreground in its own session, detached from our stdio; we record the pid ourselves
  setsid mosquitto -c "$dir/mosquitto.conf" </dev/null >"$dir/mosquitto.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/mosquitto.pid"
  deadline=$((SECONDS + 10))
  until accepts "$port"; do
    if exited "$pid"; then
      fail "$dir" "mosquitto exited at start (port $port in use?)"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      fail "$dir" "mosquitto did not accept on 127.0.0.1:$port within 10 s"
      kill -KILL "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.005
  done
  if [[ -n $tls_port ]]; then
    deadline=$((SECONDS + 10))
    until accepts "$tls_port"; do
      if ((SECONDS >= deadline)); then
        fail "$dir" "mosquitto did not accept TLS on 127.0.0.1:$tls_port within 10 s"
        exit 1
      fi
      sleep 0.005
    done
  fi
  printf 'MQTT_HOST=127.0.0.1\nMQTT_PORT=%s\n' "$port" >"$dir/mqtt.env"
  if [[ -n $tls_port ]]; then printf 'MQTT_TLS_PORT=%s\n' "$tls_port" >>"$dir/mqtt.env"; fi
}

cmd_stop() {
  local dir=$1 pid deadline
  pid=$(pid_of "$dir") || return 0
  if alive "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while alive "$pid" "$dir" && ((SECONDS < deadline)); do sleep 0.005; done
    if alive "$pid" "$dir"; then
      log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid" "$dir"; do sleep 0.01; done
    fi
  fi
  rm -f "$dir/mosquitto.pid" "$dir/mqtt.env"
}

cmd_status() {
  if running "$1"; then
    echo "mosquitto: running (pid $(pid_of "$1"), $(grep MQTT_PORT "$1/mqtt.env" 2>/dev/null))"
  else
    echo "mosquitto: stopped"
    return 3
  fi
}

main() {
  [[ $# -ge 2 ]] || usage
  local action=$1 dir
  [[ $action == start ]] && mkdir -p "$2"
  if [[ ! -d $2 ]]; then
    log "no broker in $2 (no such directory)"
    [[ $action == status ]] && exit 3
    exit 0
  fi
  dir=$(cd "$2" && pwd)
  case $action in
    start) [[ $# -le 3 ]] || usage; cmd_start "$dir" "${3:-}" ;;
    stop) cmd_stop "$dir" ;;
    status) cmd_status "$dir" ;;
    *) usage ;;
  esac
}

main "$@"
