// pm2 process file for orderbot (one host, no containers).
//
//   cd /opt/orderbot && python3.11 -m venv .venv && .venv/bin/pip install .
//   .venv/bin/orderbot migrate
//   pm2 start deploy/pm2/ecosystem.config.js
//   pm2 save && pm2 startup            # survive reboots
//
// Settings: every process runs with cwd = the repository, so pydantic-settings
// reads the repository's `.env` (see .env.example). Variables in pm2's own
// environment when the apps are first started are passed through too and take
// precedence over `.env`; pm2 keeps that environment, so after changing it use
// `pm2 restart deploy/pm2/ecosystem.config.js --update-env`.
//
// Ports on one host (all processes share the network namespace):
//   8080        orderbot-server            (HTTP_PORT)
//   9100        orderbot-outbox-worker     (METRICS_PORT: /metrics, /health)
//   9101, 9102… orderbot-worker, one port per instance (increment_var)
// The outbox worker is moved off its stand-alone default 9102 because the
// second worker instance takes 9102.
//
// Shutdown: on SIGTERM each process stops taking work and finishes in-flight
// messages within SHUTDOWN_TIMEOUT (25 s), then exits 0. kill_timeout (30 s)
// must stay above it, or pm2 SIGKILLs work in progress (the broker would then
// redeliver it, so nothing is lost, but replies may be sent twice).

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
const KILL_TIMEOUT_MS = 30000;

// Common to every app.
const common = {
  script: ORDERBOT,
  interpreter: "none", // a console script, not a Node program
  cwd: REPO,
  exec_mode: "fork", // aiohttp/aio-pika processes are not pm2-cluster aware
  autorestart: true,
  kill_timeout: KILL_TIMEOUT_MS,
  min_uptime: "10s",
  max_restarts: 50,
  exp_backoff_restart_delay: 200, // e.g. while the broker is still starting
  // Prefix of each line in pm2's log files (the app's JSON lines carry their own).
  log_date_format: "YYYY-MM-DD HH:mm:ss.SSS Z",
  merge_logs: true,
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
      name: "orderbot-server",
      args: "server",
      // One instance. pm2's cluster mode shares a port only between Node
      // programs; aiohttp is not cluster aware. For several servers add more
      // fork-mode apps, each with its own HTTP_PORT behind a load balancer
      // (or increment_var: "HTTP_PORT" with instances > 1).
      instances: 1,
      env: { ...commonEnv, HTTP_PORT: process.env.HTTP_PORT || "8080" },
    },
    {
      ...common,
      name: "orderbot-worker",
      args: "worker",
      // Instances share the `messages` queue; per-client ordering is kept by
      // the worker's Redis locks, not by pm2.
      instances: 2,
      // Each instance needs its own metrics/health port: 9101, 9102, ...
      increment_var: "METRICS_PORT",
      env: { ...commonEnv, METRICS_PORT: 9101 },
    },
    {
      ...common,
      name: "orderbot-outbox-worker",
      args: "outbox-worker",
      instances: 1,
      env: { ...commonEnv, METRICS_PORT: 9100 },
    },
  ],
};
