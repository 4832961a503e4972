"""POST /quote: what a swap would hold now, without holding, queueing or running anything.

It reads the swap's own body, JSON or multipart, the same way and checks it the same way
(a video is probed for its duration), so a quote and the swap that follows agree, and bad
input gets the swap's codes. The price is the tenant's newest book at the queue depth
the swap would see (``intake.priced``: the same per-process count, at most a second old).

Quotes are rate-limited per API key at the key's swap rate, in a bucket of their own:
quoting before each swap never uses up the swaps' allowance, and a client quoting in a
loop is stopped (a video quote runs a probe) without its swaps being throttled.

The API side only: nothing imported here reaches the worker or the engine's runner.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from app.auth.dependencies import API_KEY_AUTH_ERRORS, CurrentApiUser
from app.core.deps import SettingsDep
from app.core.errors import (
    AccountFrozen,
    DocumentedRouter,
    NotFound,
    RateLimited,
    error_responses,
)
from app.jobs import inputs, intake, schemas

# The swap route's body, input errors and helpers: a quote reads what a swap reads.
from app.jobs.endpoints import SWAP_BODY, SWAP_INPUT_ERRORS, checked_media, rate_limit
from billing import pricing
from billing import service as billing

router = DocumentedRouter(prefix="/api/v1", tags=["swap"], responses=API_KEY_AUTH_ERRORS)


@router.post(
    "/quote",
    openapi_extra=SWAP_BODY,
    response_model=schemas.QuoteOut,
    # AccountFrozen: the swap would be refused; NotFound: a user without a Token account.
    responses=error_responses(*SWAP_INPUT_ERRORS, AccountFrozen, NotFound, RateLimited),
)
async def quote(request: Request, user: CurrentApiUser, settings: SettingsDep) -> Response:
    """What POST /swap-face with this body would hold now, and your available Tokens.

    Nothing is held, queued or run; the media are checked and measured as the swap would
    (a video's duration is probed). ``tokens`` is ``ceil(base_tokens × multiplier)``,
    ``multiplier`` the peak multiplier in force now (1 under the book's threshold). A swap
    sent within about a second is priced the same, unless the prices change meanwhile.
    A quote above ``available`` is still answered (200): the swap would be 402.
    """
    headers = await rate_limit(request, user, settings, kind="quote")
    body = await inputs.read_body(request, settings.jobs_max_body_bytes)
    spec = await inputs.parse_swap_request(request, body, settings.jobs_max_body_bytes)
    prepared = await checked_media(spec, settings)
    prepared.discard()  # the numbers are all a quote needs
    async with request.app.state.db.session() as session:
        # Read afresh (and cached for the swaps that follow): a quote is never older
        # than the prices.
        book = await pricing.PROCESS_BOOKS.refresh(session, user.tenant_id)
        price = await intake.priced(
            session,
            book,
            prepared.kind,
            enhance=bool(spec.options["enhance"]),
            target_seconds=prepared.seconds,
            tenant_id=user.tenant_id,
        )
        account = await billing.account_view(session, user.user_id)
    if account.status != "active":
        raise AccountFrozen("This Token account is frozen")
    metered = settings.jobs_metering  # metering off: swaps hold nothing
    answer: dict[str, Any] = {
        "tokens": price.tokens if metered else 0,
        "price_book_version": price.price_version,
        "multiplier": pricing.multiplier_json(price.multiplier),
        "available": account.available,
        "kind": prepared.kind,
        "unit_price": price.unit_price,
        "base_tokens": price.base_tokens if metered else 0,
    }
    if price.video_seconds is not None:
        answer["video_seconds"] = price.video_seconds
    return JSONResponse(answer, headers=headers)
