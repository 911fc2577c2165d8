from orderbot.runner import run_role
from worker.service import REQUIRED, run_worker


def main() -> int:
    return run_role("worker", run_worker, required=REQUIRED)
