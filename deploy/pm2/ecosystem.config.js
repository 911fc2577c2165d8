// pm2 process file for orderbot (one host, no containers).
//
//   cd /opt/orderbot && /usr/bin/python3 -m venv .venv && .venv/bin/pip install .
//   .venv/bin/orderbot migrate
//   pm2 start deploy/pm2/ecosystem.config.js
//   pm2 save && pm2 startup            # survive reboots
//
// Run it as a user of its own, not root: pm2 runs the apps as the user who
// runs pm2, so create one and give it the checkout (or set ORDERBOT_USER: pm2
// started by root then runs each app as that user, through its `uid`/`gid`):
//   useradd --system --create-home --home-dir /var/lib/orderbot --shell /usr/sbin/nologin orderbot
//   chown -R orderbot: /opt/orderbot
//   sudo -u orderbot -H pm2 start deploy/pm2/ecosystem.config.js
//   pm2 startup systemd -u orderbot --hp /var/lib/orderbot   # prints the command to run as root
//
// Settings: every process runs with cwd = the repository, so pydantic-settings
// reads the repository's `.env` (see .env.example). Variables in pm2's own
// environment when the apps are first started are passed through too and take
// precedence over `.env`; pm2 keeps that environment, so after changing it use
// `pm2 restart deploy/pm2/ecosystem.config.js --update-env`. This file pins no
// setting that `.env` is meant to decide (HTTP_PORT included); it sets only
// the per-process metrics ports, which a shared `.env` cannot give:
//
// Ports on one host (all processes share the network namespace), a range of
// their own (9100 is node_exporter's):
//   HTTP_PORT (8080)    orderbot-server         from `.env`
//   9811                orderbot-outbox-worker  OUTBOX_METRICS_PORT (/metrics, /health)
//   9821, 9822, …       orderbot-worker         WORKER_METRICS_PORT, one per instance
//                                               (increment_var), also after `pm2 scale`
// OUTBOX_METRICS_PORT / WORKER_METRICS_PORT (the first worker's port) in the
// environment pm2 is started with move them; not in `.env`, which every
// instance shares.
//
// Shutdown: pm2 sends SIGTERM (kill_signal); each process stops taking work,
// finishes in-flight messages within SHUTDOWN_TIMEOUT (25 s), then exits 0.
// kill_timeout (45 s) stays above it with a margin, or pm2 SIGKILLs work in
// progress (the broker would then redeliver it, so nothing is lost, but a
// reply may be sent twice). Raise both together.
//
// Logs: the apps print one JSON object per line (LOG_FORMAT=json); pm2 adds
// nothing to a line (no date prefix: `time: false`, no log_date_format) and
// keeps one file per instance (merge_logs: false: `-<instance id>` in the
// name), stdout and stderr apart, under PM2_LOG_DIR (default ~/.pm2/logs).
// Rotation: pm2-logrotate,
//   pm2 install pm2-logrotate
//   pm2 set pm2-logrotate:max_size 100M && pm2 set pm2-logrotate:retain 14
//   pm2 set pm2-logrotate:compress true
// or a logrotate rule with `copytruncate` over the log directory.

"use strict";

const fs = require("fs");
const path = require("path");

// deploy/pm2/ -> repository root
const REPO = path.resolve(__dirname, "..", "..");

// The venv's console script when present, otherwise `orderbot` from PATH.
const VENV_ORDERBOT = path.join(REPO, ".venv", "bin", "orderbot");
const ORDERBOT =
  process.env.ORDERBOT_BIN ||
  (fs.existsSync(VENV_ORDERBOT) ? VENV_ORDERBOT : "orderbot");

const SHUTDOWN_TIMEOUT_S = 25;
const KILL_TIMEOUT_MS = 45000;

const OUTBOX_METRICS_PORT = Number(process.env.OUTBOX_METRICS_PORT || 9811);
const WORKER_METRICS_PORT = Number(process.env.WORKER_METRICS_PORT || 9821);

const LOG_DIR = process.env.PM2_LOG_DIR || "";

// Logs of one app: stdout and stderr in their own files, one per instance.
function logs(name) {
  if (!LOG_DIR) return {}; // pm2's defaults: ~/.pm2/logs/<name>-out-<id>.log, -error-
  return {
    out_file: path.join(LOG_DIR, `${name}-out.log`),
    error_file: path.join(LOG_DIR, `${name}-error.log`),
  };
}

// Run as ORDERBOT_USER when pm2 itself runs as root (see above).
const RUN_AS = process.env.ORDERBOT_USER;
const user = RUN_AS ? { uid: RUN_AS, gid: RUN_AS } : {};

// Common to every app.
const common = {
  script: ORDERBOT,
  interpreter: "none", // a console script, not a Node program
  cwd: REPO,
  exec_mode: "fork", // aiohttp/aio-pika processes are not pm2-cluster aware
  autorestart: true,
  kill_signal: "SIGTERM",
  kill_timeout: KILL_TIMEOUT_MS,
  min_uptime: "10s",
  max_restarts: 50,
  exp_backoff_restart_delay: 200, // e.g. while the broker is still starting
  // Lines exactly as the app wrote them: the JSON lines carry their own time.
  time: false,
  merge_logs: false,
  ...user,
};

// Settings come from `.env` and from the environment pm2 is started with (pm2
// passes process.env through); only what must agree with this file is pinned.
const commonEnv = {
  PYTHONUNBUFFERED: "1",
  SHUTDOWN_TIMEOUT: `${SHUTDOWN_TIMEOUT_S}s`,
};

module.exports = {
  apps: [
    {
      ...common,
      ...logs("orderbot-server"),
      name: "orderbot-server",
      args: "server",
      // One instance. pm2's cluster mode shares a port only between Node
      // programs; aiohttp is not cluster aware. For several servers add more
      // fork-mode apps, each with its own HTTP_PORT behind a load balancer.
      instances: 1,
      env: { ...commonEnv },
    },
    {
      ...common,
      ...logs("orderbot-worker"),
      name: "orderbot-worker",
      args: "worker",
      // Instances share the `messages` queue; per-client ordering is kept by
      // the worker's Redis locks, not by pm2.
      instances: 2,
      // Each instance needs its own metrics/health port: 9821, 9822, ...
      increment_var: "WORKER_METRICS_PORT",
      env: { ...commonEnv, WORKER_METRICS_PORT },
    },
    {
      ...common,
      ...logs("orderbot-outbox-worker"),
      name: "orderbot-outbox-worker",
      args: "outbox-worker",
      instances: 1,
      env: { ...commonEnv, OUTBOX_METRICS_PORT },
    },
  ],
};
