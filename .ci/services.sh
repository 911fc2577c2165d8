#!/usr/bin/env bash
# Start PostgreSQL, Redis and RabbitMQ where they are installed but not running,
# then wait until each answers. Used by .ci/run and `make services`.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    answers "$port" && { echo "services: $name answers on $port"; return 0; }
    sleep 0.5
  done
  echo "services: $name did not come up on port $port" >&2
  return 1
}

if ! answers 5432 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! answers 6379 && command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! answers 5672 && command -v rabbitmq-server >/dev/null; then
  rabbitmq-server -detached
fi

wait_port PostgreSQL 5432
wait_port Redis 6379
wait_port RabbitMQ 5672
if command -v rabbitmqctl >/dev/null; then
  # A broker can hold its port open yet answer nothing (seen here after fault-injection
  # runs): then it is restarted, since every test needs a working one.
  if ! timeout 30 rabbitmqctl -q await_startup --timeout 20 >/dev/null 2>&1; then
    echo "services: RabbitMQ does not answer; restarting it" >&2
    pkill -9 -f beam.smp || true
    sleep 2
    rabbitmq-server -detached
    wait_port RabbitMQ 5672
    timeout 90 rabbitmqctl -q await_startup --timeout 60 >/dev/null
  fi
  # RabbitMQ 3.10's supervisor of at-least-once dead-letter workers gives up for good
  # when a quorum queue is deleted while its worker starts (a test that deletes its
  # queues at once can do that); every new such queue then fails. Restart just it.
  if [ "$(timeout 30 rabbitmqctl -q eval 'whereis(rabbit_fifo_dlx_sup).' 2>/dev/null)" = "undefined" ]; then
    echo "services: RabbitMQ's dead-letter supervisor is down; restarting it" >&2
    timeout 30 rabbitmqctl -q eval 'supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup).'
  fi
fi
