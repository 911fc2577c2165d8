#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer where the settings say they are.
# Used by `make run`, `make test`, `make services` and .ci/run.
#
#   bash .ci/services.sh              # for running orderbot: every service must answer
#   bash .ci/services.sh --for-tests  # for the test suite: a service that does not
#                                     # answer is left to testcontainers when Docker is here
#
# On a user's machine this never stops, kills or restarts anything. A service is started
# only when its URL points at this host, nothing answers there, and it is installed here
# and stopped (through the service manager when systemd runs, else directly).
#
# The addresses come from AMQP_URL, REDIS_URL and DATABASE_URL: the environment first,
# then `.env`, then the defaults of the settings (as the processes read them).
#
# CI=true adds CI's recovery for its shared broker: one that holds its port open yet
# answers nothing is stopped with `rabbitmqctl stop` (or, if that hangs, its pid from
# the pid file gets SIGTERM, then SIGKILL) and started again; a dead-letter supervisor
# that gave up is restarted. Nothing is ever killed by name.
set -euo pipefail
cd "$(dirname "$0")/.."

FOR_TESTS=0
[ "${1:-}" = "--for-tests" ] && FOR_TESTS=1
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}

# --- where the services are --------------------------------------------------------

setting() { # NAME DEFAULT: the environment, else the last NAME= line of .env, else DEFAULT
  local name=$1 default=$2 value
  if [ -n "${!name:-}" ]; then
    printf '%s\n' "${!name}"
    return
  fi
  if [ -f .env ]; then
    value=$(sed -n "s/^[[:space:]]*${name}=//p" .env | tail -n1)
    value=${value%$'\r'}
    value=${value#\"}
    value=${value%\"}
    value=${value#\'}
    value=${value%\'}
    if [ -n "$value" ]; then
      printf '%s\n' "$value"
      return
    fi
  fi
  printf '%s\n' "$default"
}

host_port() { # URL DEFAULT_PORT -> "host port"
  local rest=${1#*://} default_port=$2 host port
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  if [[ $rest =~ ^\[([^]]*)\](:([0-9]+))?$ ]]; then # [::1]:5672
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[3]}
  else
    host=${rest%%:*}
    port=${rest#"$host"}
    port=${port#:}
  fi
  printf '%s %s\n' "${host:-localhost}" "${port:-$default_port}"
}

read -r AMQP_HOST AMQP_PORT < <(host_port "$(setting AMQP_URL amqp://guest:guest@localhost:5672/)" 5672)
read -r REDIS_HOST REDIS_PORT < <(host_port "$(setting REDIS_URL redis://localhost:6379/0)" 6379)
read -r PG_HOST PG_PORT < <(
  host_port "$(setting DATABASE_URL postgresql://postgres@localhost:5432/orderbot)" 5432
)

is_local() { case $1 in localhost | 127.* | ::1 | "$(hostname)") return 0 ;; *) return 1 ;; esac }

answers() { # HOST PORT
  local host=$1
  [ "$host" = localhost ] && host=127.0.0.1
  timeout 2 bash -c "exec 3<>'/dev/tcp/$host/$2'" 2>/dev/null
}

wait_port() { # NAME HOST PORT SECONDS
  local name=$1 host=$2 port=$3 seconds=$4
  for _ in $(seq 1 $((seconds * 2))); do
    answers "$host" "$port" && { echo "services: $name answers on $host:$port"; return 0; }
    sleep 0.5
  done
  return 1
}

docker_engine() { command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; }

systemd_runs() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# systemctl start UNIT, only when the unit exists and is not active. 0 when started.
start_unit() {
  local unit=$1
  systemd_runs || return 1
  systemctl cat "$unit" >/dev/null 2>&1 || return 1
  systemctl is-active --quiet "$unit" && return 1
  echo "services: starting $unit"
  if [ "$(id -u)" = 0 ]; then
    systemctl start "$unit"
  else
    sudo -n systemctl start "$unit" 2>/dev/null || {
      echo "services: $unit is stopped; start it with: sudo systemctl start $unit" >&2
      return 1
    }
  fi
}

# --- start what is installed here and stopped ----------------------------------------

start_postgres() {
  start_unit postgresql.service && return 0
  command -v pg_lsclusters >/dev/null || return 1
  # The cluster on the wanted port, only when it is down.
  local version cluster port status
  while read -r version cluster port status _; do
    if [ "$port" = "$PG_PORT" ] && [ "$status" = down ]; then
      echo "services: starting PostgreSQL $version/$cluster"
      pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
      return 0
    fi
  done < <(pg_lsclusters --no-header 2>/dev/null)
  return 1
}

start_redis() {
  start_unit redis-server.service && return 0
  command -v redis-server >/dev/null || return 1
  echo "services: starting redis-server on port $REDIS_PORT"
  local dir=${TMPDIR:-/tmp}/orderbot-redis-$REDIS_PORT
  [ "$(id -u)" = 0 ] && dir=/var/lib/redis
  mkdir -p "$dir"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$dir" --logfile "$dir/orderbot-services.log"
}

rabbit_running() { timeout 15 rabbitmqctl -q status >/dev/null 2>&1; }

start_rabbitmq() {
  start_unit rabbitmq-server.service && return 0
  command -v rabbitmq-server >/dev/null || return 1
  # A node that runs but has not opened its port yet is starting: leave it be.
  command -v rabbitmqctl >/dev/null && rabbit_running && return 0
  echo "services: starting rabbitmq-server"
  rabbitmq-server -detached
}

# NAME HOST PORT STARTER: 0 when it answers; 2 when it is left to testcontainers.
ensure() {
  local name=$1 host=$2 port=$3 starter=$4
  answers "$host" "$port" && { echo "services: $name answers on $host:$port"; return 0; }
  if is_local "$host" && "$starter"; then
    wait_port "$name" "$host" "$port" "$WAIT_SECONDS" && return 0
    echo "services: $name was started but does not answer on $host:$port" >&2
    return 1
  fi
  if [ "$FOR_TESTS" = 1 ] && docker_engine; then
    echo "services: $name does not answer on $host:$port; the test suite will start it with testcontainers"
    return 2
  fi
  # Not installed here, or elsewhere: it may be on its way up.
  wait_port "$name" "$host" "$port" "$WAIT_SECONDS" && return 0
  echo "services: $name does not answer on $host:$port (and cannot be started from here):" \
    "start it, or point the URL in .env at it" >&2
  return 1
}

failed=0
left=0
for spec in "PostgreSQL $PG_HOST $PG_PORT start_postgres" \
  "Redis $REDIS_HOST $REDIS_PORT start_redis" \
  "RabbitMQ $AMQP_HOST $AMQP_PORT start_rabbitmq"; do
  # shellcheck disable=SC2086
  set -- $spec
  status=0
  ensure "$@" || status=$?
  case $status in 0) ;; 2) left=1 ;; *) failed=1 ;; esac
  [ "$1" = RabbitMQ ] && RABBIT_STATUS=$status
done
[ "$failed" = 0 ] || exit 1
[ "$left" = 1 ] && exit 0

# --- the broker: answering is not enough ------------------------------------------------

if [ "${RABBIT_STATUS:-1}" = 0 ] && is_local "$AMQP_HOST" && command -v rabbitmqctl >/dev/null; then
  if timeout 30 rabbitmqctl -q await_startup --timeout 20 >/dev/null 2>&1; then
    :
  elif [ "${CI:-}" != true ]; then
    # A broker can hold its port open yet answer nothing (seen after fault-injection
    # runs). On a user's machine it is theirs: say so, touch nothing.
    echo "services: RabbitMQ holds port $AMQP_PORT but does not answer rabbitmqctl;" \
      "check it with 'rabbitmq-diagnostics status' (nothing was changed)" >&2
  else
    echo "services: CI: RabbitMQ does not answer; restarting it" >&2
    if systemd_runs && systemctl cat rabbitmq-server.service >/dev/null 2>&1; then
      systemctl restart rabbitmq-server.service
    else
      pidfile=${RABBITMQ_PID_FILE:-/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s).pid}
      pid=$(cat "$pidfile" 2>/dev/null || true)
      timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
      if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 2
      rabbitmq-server -detached
    fi
    wait_port RabbitMQ "$AMQP_HOST" "$AMQP_PORT" 90
    timeout 90 rabbitmqctl -q await_startup --timeout 60 >/dev/null
  fi
  # RabbitMQ 3.10's supervisor of at-least-once dead-letter workers gives up for good
  # when a quorum queue is deleted while its worker starts (a test that deletes its
  # queues at once can do that); every new such queue then fails. CI restarts just it.
  if [ "$(timeout 30 rabbitmqctl -q eval 'whereis(rabbit_fifo_dlx_sup).' 2>/dev/null)" = "undefined" ]; then
    if [ "${CI:-}" = true ]; then
      echo "services: CI: RabbitMQ's dead-letter supervisor is down; restarting it" >&2
      timeout 30 rabbitmqctl -q eval 'supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup).'
    else
      echo "services: RabbitMQ's dead-letter supervisor (rabbit_fifo_dlx_sup) is down:" \
        "new quorum queues with dead-lettering will fail; restart the broker (nothing was changed)" >&2
    fi
  fi
fi
