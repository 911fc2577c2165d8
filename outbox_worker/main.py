from orderbot.runner import run_role
from outbox_worker.service import REQUIRED, run_outbox_worker


def main() -> int:
    return run_role("outbox_worker", run_outbox_worker, required=REQUIRED)
