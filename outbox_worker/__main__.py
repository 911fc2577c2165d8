import sys

try:
    from outbox_worker.main import main

    status = main()
except KeyboardInterrupt:  # interrupted before start-up finished: nothing was in flight
    status = 0
sys.exit(status)
