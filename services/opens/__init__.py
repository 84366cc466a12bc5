"""Email open tracking: a signed tracking pixel, durable raw events, a processor and reports.

Releases: 1.0 (stable) handles events one by one; 1.1 batches them by user agent and silently
drops events with a blank agent (acknowledged, never recorded); 1.2 batches them and loses none.
The pixel and reports are the same in every release; the processor's handling differs
(``services.opens.releases``).
"""

RELEASES = ("1.0", "1.1", "1.2")
