"""Pydantic shapes of the webhook routes: a job's deliveries, the tenant's secret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class WebhookSecretOut(BaseModel):
    tenant_id: uuid.UUID
    secret: str = Field(description="HMAC-SHA256 key of X-SwapMeter-Signature")
    created_at: datetime
    rotated_at: datetime | None


class WebhookDeliveryOut(BaseModel):
    id: int
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    delivery_id: uuid.UUID | None
    created_at: datetime
    delivered_at: datetime | None
