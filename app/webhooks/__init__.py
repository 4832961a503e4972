"""Webhooks: a job's end POSTed, signed, to its owner's URL.

- ``signing``: the ``X-SwapMeter-Signature`` scheme (sign, verify);
- ``delivery``: one delivery over HTTP, with its retries and backoff;
- ``sweep``: sending a finished job's delivery row (the outbox its finish wrote), and
  taking over those whose sender died;
- ``service``: the tenants' signing secrets; ``repository``: every statement;
- ``endpoints``: a job's deliveries and the tenant's secret; ``schemas``, ``models``.
"""
