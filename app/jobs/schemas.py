"""Pydantic shapes of the swap API: the swap-face request, jobs, and the answers.

The contract (../shared/CONTRACT.md, End-user API) fixes the field names; extra fields
are additions. Requests are validated here; business rules (at most 6 face pairs, output
format per media kind) are checked by the service with their own error codes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema, model_validator

MAX_FACE_PAIRS = 6
MAX_FACE_INDEX = 255  # far above the faces one picture holds; keeps indices small


class MediaRef(BaseModel):
    """A media input as an object: exactly one of ``base64`` or ``url``."""

    # Exactly one of the two, as the schema says (``{}`` is not a media input).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["base64"]}, {"required": ["url"]}]},
    )

    # Absent, not null: the schema (and so this model) admits one string field.
    base64: Annotated[str | None, WithJsonSchema({"type": "string"})] = Field(
        None, description="The file, base64 (a data: URL prefix is ok)"
    )
    url: Annotated[str | None, WithJsonSchema({"type": "string"})] = Field(
        None, description="http(s) URL to fetch (public hosts only)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> MediaRef:
        given = [name for name in self.model_fields_set if getattr(self, name) is not None]
        if len(given) != 1 or len(self.model_fields_set) != 1:
            raise ValueError("give exactly one of base64 or url")
        return self


class FacePair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: true is not face 1, nor 0.5 face 0.
    target_face: StrictInt = Field(
        ge=0, le=MAX_FACE_INDEX, description="Face index in the target, 0 = leftmost"
    )
    source_face: StrictInt = Field(
        0, ge=0, le=MAX_FACE_INDEX, description="Face index in the source, 0 = leftmost"
    )


class SwapFaceRequest(BaseModel):
    """JSON body of POST /api/v1/swap-face (multipart sends the same fields as form fields
    and ``source`` / ``target`` as file parts)."""

    source: str | MediaRef = Field(description="The face to put in: base64, or an object")
    target: str | MediaRef = Field(description="The image or video to put it into")
    faces: Literal["largest", "all"] | list[FacePair] = Field(
        "largest", description=f'"largest", "all", or up to {MAX_FACE_PAIRS} explicit pairs'
    )
    output_format: Literal["jpg", "jpeg", "png", "webp", "mp4"] | None = Field(
        None, description="Default: jpg for images, mp4 for videos"
    )
    keep_fps: bool = Field(True, description="Video: keep the source frame rate")
    keep_audio: bool = Field(True, description="Video: keep the audio track")
    enhance: bool = Field(False, description="Run the face enhancer (a surcharge applies)")
    watermark: bool = Field(True, description="Draw the visible AI-generated label")
    response: Literal["base64", "url"] = Field(
        "base64", description="Synchronous answers carry the file (base64) or a signed URL"
    )
    webhook_url: str | None = Field(None, description="POSTed the job JSON when it ends")


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    """The contract's job, plus a few fields that explain its bill."""

    id: uuid.UUID
    status: Literal["queued", "processing", "succeeded", "failed", "canceled"]
    progress: float = Field(ge=0, le=1)
    kind: Literal["image", "video"]
    tokens_held: int
    tokens_charged: int
    error: JobError | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    price_version: int = Field(description="The price book version this job was priced with")
    multiplier: float = Field(
        description="The peak multiplier its Tokens were held at (1: none); tokens_held is "
        "ceil(price × multiplier)"
    )
    target_seconds: float | None = Field(description="Video: the probed duration")
    seconds_done: float | None = Field(
        description="Video: seconds processed before it ended (what a partial bill is for)"
    )
    cancel_requested: bool
    urls: dict[str, str]


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class SwapAccepted(BaseModel):
    """202: the job is queued (videos, or an image that took longer than the wait)."""

    status: Literal["queued"] = "queued"
    job_id: uuid.UUID
    tokens_held: int
    multiplier: float = Field(1.0, description="The peak multiplier tokens_held was priced at")
    urls: dict[str, str]


class SwapResult(BaseModel):
    image: str | None = Field(None, description="The swapped image, base64")
    image_url: str | None = Field(None, description="Signed URL of the swapped image")
    video: str | None = Field(None, description="The swapped video, base64")
    video_url: str | None = Field(None, description="Signed URL of the swapped video")
    duration: float = Field(description="Processing time, seconds")
    resolution: str = Field(description="WxH")
    faces_swapped: int = Field(description="Images: faces swapped; videos: frames with a swap")


class SwapSucceeded(BaseModel):
    status: Literal["success"] = "success"
    message: str = "Face swap completed"
    job_id: uuid.UUID
    tokens_charged: int
    result: SwapResult


class QuoteOut(BaseModel):
    """What the swap would hold now (POST /quote): nothing is held, queued or run."""

    tokens: int = Field(description="Tokens the swap would hold now: ceil(base × multiplier)")
    price_book_version: int = Field(description="The price book version it is priced with")
    multiplier: float = Field(
        description="The peak multiplier in force now (1: none; the queue is under the "
        "book's peak threshold, or the book has no peak)"
    )
    available: int = Field(description="Your Tokens available now (balance - held)")
    kind: Literal["image", "video"]
    unit_price: int = Field(description="Tokens per image, or per started video second")
    base_tokens: int = Field(description="The price before the peak multiplier")
    video_seconds: int | None = Field(
        None, description="Video: the started seconds of the target, what it is billed for"
    )
