from orderbot.runner import run_role
from server.app import REQUIRED, run_server


def main() -> int:
    return run_role("server", run_server, required=REQUIRED)
