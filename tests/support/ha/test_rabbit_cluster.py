"""What a killed test run left of its RabbitMQ nodes is killed by the next run, and
nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ha import rabbit_cluster
from tests.support.ha.node_loss import answers_around


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(rabbit_cluster, "RUNS_ROOT", tmp_path)
    return tmp_path


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _fake_node(run_dir: Path, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """A process group that looks like a node of `run_dir` (its environment names it)."""
    env = {**os.environ, "RABBITMQ_MNESIA_BASE": f"{run_dir}/n1/mnesia"}
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )
    started.append(process)
    return process


def _run_dir(root: Path, owner: str, groups: list[int]) -> Path:
    run_dir = root / "run"
    run_dir.mkdir()
    (run_dir / "owner").write_text(owner)
    (run_dir / "groups").write_text("\n".join(map(str, groups)) + "\n")
    return run_dir


def test_the_nodes_of_a_dead_run_are_killed_and_its_files_deleted(
    runs_root: Path, dead_pid: int, spawned: list[subprocess.Popen[bytes]]
) -> None:
    run_dir = runs_root / "run"
    node = _fake_node(run_dir, spawned)
    _run_dir(runs_root, f"{dead_pid} 1\n", [node.pid])

    assert rabbit_cluster.sweep() == 1

    assert node.wait(timeout=10) != 0
    assert not run_dir.exists()


def test_a_live_run_and_a_stranger_reusing_a_pid_are_left_alone(
    runs_root: Path, dead_pid: int, spawned: list[subprocess.Popen[bytes]]
) -> None:
    stranger = _fake_node(runs_root / "someone-else", spawned)
    _run_dir(runs_root, f"{dead_pid} 1\n", [stranger.pid])
    live = runs_root / "live"
    live.mkdir()
    (live / "owner").write_text(f"{os.getpid()} {rabbit_cluster._started_at(os.getpid())}\n")

    assert rabbit_cluster.sweep() == 0

    assert stranger.poll() is None
    assert live.exists()


def test_the_silence_around_a_stop_is_read_from_the_deliveries() -> None:
    # Replies at 1, 2; the stop at 2.5; the node gone at 5; replies again at 6 and 7.
    first, silence = answers_around([1.0, 2.0, 6.0, 7.0], began=2.5, gone=5.0)

    assert first == 1.0
    assert silence == 4.0
