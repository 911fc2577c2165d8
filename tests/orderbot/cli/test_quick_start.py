"""README's quick start, run as a newcomer runs it, so that it cannot rot.

The commands are read from README's block under "Quick start": `make run` is what
`make -n run` prints (the `.env` copy, the migration, `orderbot run`), run in a fresh
directory with `.env` from `.env.example`; every other line is run by bash. Only what
this machine shares with others is changed: the services' test database, queue and key
prefixes, a free HTTP port, the ops ports off, and Chat2Desk's API (the fake, with the
API token README tells a newcomer to put in).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orderbot.config.settings import Settings
from tests.support.customers import expected_replies
from tests.support.fake_provider import FakeChat2Desk
from tests.support.processes import free_port, wait_http_ok

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"
README_PORT = Settings.model_fields["http_port"].default
# The services are shared with other runs: this test's own database, queues and keys.
# Everything else, the webhook token included, comes from `.env`.
ISOLATION = ("AMQP_URL", "REDIS_URL", "DATABASE_URL", "QUEUE_PREFIX", "REDIS_KEY_PREFIX")
OWN_TOKEN = ("CHAT2DESK_API_URL", "CHAT2DESK_API_TOKEN")


@dataclass(frozen=True)
class QuickStart:
    commands: list[str]  # whole shell commands, continuation lines joined
    expected: dict[str, list[str]]  # command -> the output lines README shows under it


def quick_start() -> QuickStart:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert section is not None, "README.md has no '## Quick start' section"
    block = re.search(r"^```sh\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block is not None, "README's quick start has no ```sh block"
    commands: list[str] = []
    expected: dict[str, list[str]] = {}
    for line in block.group(1).replace("\\\n", " ").splitlines():
        if line.startswith("# "):
            expected.setdefault(commands[-1], []).append(line[2:])
        elif line.strip():
            commands.append(line.split("  #")[0].strip())
    return QuickStart(commands, expected)


def make_run_steps() -> list[str]:
    """What `make run` runs besides installing and starting services, in its order."""
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", f"VENV={sys.prefix}", "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    steps = [
        line
        for line in printed
        if line == "cp .env.example .env" or re.search(r"/orderbot (migrate|run)$", line)
    ]
    assert len(steps) == 3, f"`make run` changed; this test runs: {printed}"
    return steps


def split_command(line: str) -> tuple[dict[str, str], list[str]]:
    """`A=1 cmd args` -> ({A: 1}, [cmd, args])."""
    words = shlex.split(line)
    assignments = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    return assignments, words


@dataclass
class Session:
    outputs: dict[str, str]  # command -> its stdout
    log: str


async def run_quick_start(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path, body: dict[str, object]
) -> Session:
    """README's block in a fresh directory; stopped once the customer got the replies."""
    client_id, replies = str(body["client_id"]), len(expected_replies([str(body["text"])]))
    start = quick_start()
    assert start.commands[0] == "make run", "the quick start no longer begins with make run"
    port = free_port()
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    settings_names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in settings_names}
    env |= {name: config[name] for name in (*ISOLATION, *OWN_TOKEN)}
    env |= {"HTTP_PORT": str(port), "METRICS_PORT": "0"}

    *setup, run_line = make_run_steps()
    for line in setup:
        assignments, argv = split_command(line)
        status, _, stderr = await _run(argv, env | assignments, tmp_path)
        assert status == 0, f"{line}: {stderr}"
    log_path = tmp_path / "run.log"
    assignments, argv = split_command(run_line)
    with log_path.open("wb") as log_file:
        run = await asyncio.create_subprocess_exec(
            *argv, env=env | assignments, cwd=tmp_path, stdout=log_file, stderr=log_file
        )
    outputs: dict[str, str] = {}
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/health/ready")
        for command in start.commands[1:]:
            shell = command.replace(f"localhost:{README_PORT}", f"localhost:{port}")
            status, stdout, stderr = await _run(["bash", "-c", shell], env, tmp_path)
            assert status == 0, f"{command}: {stderr}"
            shown = start.expected.get(command)
            if shown is not None:
                assert stdout.splitlines() == shown, (
                    f"README shows {shown} under {command[:40]}...; it printed {stdout!r}"
                )
            outputs[command] = stdout
        await fake.wait_for(lambda: len(fake.texts_for(client_id)) >= replies)
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C, as README says
        try:
            status = await asyncio.wait_for(run.wait(), 30)
        except TimeoutError:
            run.kill()
            raise
    log = log_path.read_text(encoding="utf-8")
    assert status == 0, log[-3000:]
    return Session(outputs, log)


async def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def example_webhook() -> tuple[str, dict[str, object]]:
    """README's curl command and the JSON body it posts."""
    start = quick_start()
    curls = [command for command in start.commands if command.startswith("curl ")]
    assert len(curls) == 1, "the quick start should post exactly one example webhook"
    words = shlex.split(curls[0])
    body = json.loads(words[words.index("-d") + 1])
    assert isinstance(body, dict)
    return curls[0], body


async def test_readme_example_webhook_prints_what_readme_shows_and_is_answered(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    curl, body = example_webhook()

    session = await run_quick_start(config, fake, tmp_path, body)

    assert session.outputs[curl].splitlines() == quick_start().expected[curl]
    assert fake.texts_for(str(body["client_id"])) == expected_replies([str(body["text"])])


async def test_the_log_shows_the_steps_readme_names(
    config: dict[str, str], fake: FakeChat2Desk, tmp_path: Path
) -> None:
    _, body = example_webhook()

    session = await run_quick_start(config, fake, tmp_path, body)

    for event in ("webhook_queued", "step_applied", "replies_sent"):
        assert f"`{event}`" in README.read_text(encoding="utf-8")
        assert event in session.log, event
