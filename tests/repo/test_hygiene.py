"""What no file of the repository may do.

No script, Makefile, compose/CI/Prometheus YAML, pm2 file or unit kills a process by its
name: on a user's machine (and on the shared CI machine) a name matches processes
that are not ours, the user's own broker first of all. Processes are stopped by the
pid we started, the service's own tool (`rabbitmqctl stop`) or the service manager.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Files that run commands: by suffix, by name, or by a shell shebang.
SUFFIXES = {".sh", ".bash", ".yml", ".yaml", ".js", ".mjs", ".cjs", ".service", ".target"}
NAMES = {"Makefile", "Dockerfile", "Procfile"}

# Built from parts so that this file does not match itself.
_P, _K = "p" + "kill", "kill" + "all"
KILL_BY_NAME = [
    re.compile(rf"\b{_P}\b"),  # pkill [-9] [-f] NAME
    re.compile(rf"\b{_K}\b"),  # killall NAME
    re.compile(r"\bp" + r"grep\b[^\n]*\|\s*xargs\s+(sudo\s+)?kill\b"),  # pgrep ... | xargs kill
    re.compile(r"\bkill\b[^\n]*\$\(\s*p" + r"grep\b"),  # kill $(pgrep ...)
    re.compile(r"\bkill\b[^\n]*`\s*p" + r"grep\b"),  # kill `pgrep ...`
    re.compile(r"\bkill\s+(-\w+\s+)*-f\b"),  # kill -9 -f NAME (no such kill: a pkill in disguise)
    re.compile(r"\bfuser\b[^\n]*\s-k\b"),  # fuser -k: whoever holds a port or file
]


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [REPO / name for name in listed.split("\0") if name]


def runs_commands(path: Path) -> bool:
    if path.suffix in SUFFIXES or path.name in NAMES:
        return True
    try:
        with path.open("rb") as file:
            first = file.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and any(
        shell in first for shell in (b"sh", b"bash", b"node", b"env")
    )


def command_files() -> list[Path]:
    return sorted(path for path in tracked_files() if path.is_file() and runs_commands(path))


def test_the_repository_has_command_files_to_check() -> None:
    names = {path.relative_to(REPO).as_posix() for path in command_files()}
    assert {".ci/services.sh", ".ci/run", "Makefile", "deploy/pm2/ecosystem.config.js"} <= names


@pytest.mark.parametrize(
    "path", command_files(), ids=lambda path: path.relative_to(REPO).as_posix()
)
def test_no_file_kills_a_process_by_name(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    found = [
        f"{path.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
        for pattern in KILL_BY_NAME
        for match in pattern.finditer(text)
    ]
    assert found == []


@pytest.mark.parametrize(
    "line",
    [
        "pkill -9 -f beam.smp || true",
        "  killall rabbitmq-server",
        "pgrep -f orderbot | xargs kill -9",
        "kill -9 $(pgrep beam)",
        "kill -9 -f beam.smp",
        "fuser -k 5672/tcp",
    ],
)
def test_the_patterns_catch_kill_by_name(line: str) -> None:
    assert any(pattern.search(line) for pattern in KILL_BY_NAME)


@pytest.mark.parametrize(
    "line",
    [
        'kill -TERM "$pid"',
        "kill -0 $pid 2>/dev/null",
        "rabbitmqctl -q stop",
        "kill_timeout: KILL_TIMEOUT_MS,",
        "KillSignal=SIGTERM",
    ],
)
def test_the_patterns_let_kill_by_pid_pass(line: str) -> None:
    assert not any(pattern.search(line) for pattern in KILL_BY_NAME)


# --- the Makefile -----------------------------------------------------------------------


def make_dry_run(target: str, venv: Path) -> str:
    """The commands `make TARGET` would run from scratch (a venv that does not exist)."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", f"VENV={venv}", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    commands = make_dry_run("run", tmp_path / "venv")
    assert "pip install --quiet -e .\n" in commands
    assert "[dev]" not in commands
    assert "services.sh\n" in commands  # starts stopped services, leaves tests' fallback off


@pytest.mark.parametrize("target", ["test", "test-reliability", "lint"])
def test_make_test_and_lint_add_the_dev_extra(tmp_path: Path, target: str) -> None:
    assert "-e '.[dev]'" in make_dry_run(target, tmp_path / "venv")


@pytest.mark.parametrize("target", ["test", "test-reliability"])
def test_make_test_leaves_missing_services_to_testcontainers(tmp_path: Path, target: str) -> None:
    assert "services.sh --for-tests" in make_dry_run(target, tmp_path / "venv")


def phony_targets() -> list[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert phony is not None
    return phony.group(1).split()


@pytest.mark.parametrize("target", phony_targets())
def test_every_phony_target_runs_a_command(tmp_path: Path, target: str) -> None:
    # A declared target with no rule fails here; one with an empty rule would let
    # `make TARGET` succeed while doing nothing (make says only "Nothing to be done").
    commands = make_dry_run(target, tmp_path / "venv").splitlines()
    assert [line for line in commands if line.strip() and not line.startswith("make:")]


# --- the documentation ------------------------------------------------------------------

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *REPO.glob("*/README.md")])
_LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_docs_name_no_issue_numbers_or_design_notes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.findall(r"DESIGN\.md|\bissues? #?\d+", text, re.IGNORECASE)


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_docs_links_point_at_files_that_exist(path: Path) -> None:
    missing = [
        target
        for target in _LINK.findall(path.read_text(encoding="utf-8"))
        if not (path.parent / target).exists()
    ]
    assert missing == []


def test_readme_links_every_doc() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for doc in (REPO / "docs").glob("*.md"):
        assert f"(docs/{doc.name})" in readme, doc.name
