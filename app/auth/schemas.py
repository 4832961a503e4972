"""Request and response bodies of sign-in."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.fields import Text


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: Text = Field(max_length=320)
    password: str = Field(max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
