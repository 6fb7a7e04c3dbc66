"""`python -m bot.reapply_webhooks`: apply again the webhook writes set aside as failed.

Webhooks that arrive in a crowd are answered once their events are parked in Redis, and
applied a moment later (storage/inbound.py). A parked write that fails to apply (a fault of
ours: the log says which) is set aside, kept a week, and counted by the
`messenger_webhook_writes_set_aside` gauge. Once the fault is fixed and deployed, run this:
the writes are parked again and applied now; any that fail again are set aside again.
"""

from __future__ import annotations

import sys

from bot.app import create_app
from bot.config import settings_or_exit
from storage import Storage


def main() -> int:
    settings = settings_or_exit()
    store: Storage = create_app(settings).extensions["storage"]  # as web and workers apply them
    moved = store.inbound.requeue_set_aside()
    store.inbound.drain_inbox()
    again = store.metrics.gauges()["webhook_writes_set_aside"]
    print(f"applied again {moved} webhook write(s) that had been set aside; {again} set aside now")
    return 1 if again else 0


if __name__ == "__main__":
    sys.exit(main())
