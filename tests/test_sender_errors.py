"""The sender's Graph error table: each kind of refusal the client raises reaches its handler.

Behaviour per handler is covered against the simulator (test_runs.py, test_faults.py); this
guards the table itself, which a new error class or a lost entry would silently route to
"failed" (GraphError's handler).
"""

from __future__ import annotations

from bot import graph, policy
from jobs.sender import BatchSender

# What the sender does for each action of bot/policy.py's error rules.
HANDLER_OF_ACTION = {
    policy.RETRY: BatchSender._on_retryable,
    policy.RATE_LIMIT: BatchSender._on_rate_limit,
    policy.AMBIGUOUS: BatchSender._on_ambiguous,
    policy.OUTSIDE_WINDOW: BatchSender._on_outside_window,
    policy.FAIL: BatchSender._on_refused,
    policy.TOKEN: BatchSender._on_page_stopped,
    policy.PAGE_BLOCKED: BatchSender._on_page_stopped,
}


def test_every_error_class_the_client_raises_reaches_the_handler_of_its_action():
    raised = graph._CLASS_OF_ACTION  # the one place Facebook's errors become classes
    assert {
        action: BatchSender.handler_for(cls) for action, cls in raised.items()
    } == HANDLER_OF_ACTION


def test_a_subclass_without_an_entry_is_handled_as_its_nearest_parent():
    class QuotaError(graph.RateLimitError):
        pass

    assert BatchSender.handler_for(QuotaError) is BatchSender._on_rate_limit
    assert BatchSender.handler_for(graph.PermanentError) is BatchSender._on_refused
