import sys

from orderbot.startup import RoleMain, run_role_main


def _load() -> RoleMain:
    from outbox_worker.main import main

    return main


sys.exit(run_role_main(_load))
