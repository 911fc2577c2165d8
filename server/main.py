from orderbot.runner import run_role
from server.app import REQUIRED, check_settings, run_server


def main() -> int:
    return run_role("server", run_server, required=REQUIRED, check=check_settings)
