import sys

from orderbot.runtime.bootstrap import main

sys.exit(main("outbox_worker"))
