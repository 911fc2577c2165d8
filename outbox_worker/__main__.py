import sys

from outbox_worker.main import main

sys.exit(main())
