"""Anomaly rules on the swap path: a tenant's limits (requests per minute, the same source
face per hour, Tokens per day), counted in Redis by one Lua script per swap before anything
is held, and the flags a breach raises (freeze or flag, audit, metric, webhook).

``counters`` (the script and its keys), ``check`` (the swap path's entry), ``breaches``
(recording one), ``rules`` and ``flags`` (the admin side's use cases), ``repository``
(every SQL statement), ``models``, ``schemas``, ``metrics``.
"""
