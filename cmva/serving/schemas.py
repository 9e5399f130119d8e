"""Request validation for the CMVA endpoints: bad input → InvalidInput (HTTP 400) naming the field.

V1 request: {"instances": [{"question": "...", "profile": {"care": 1.0, ...}}], "parameters": {...}}
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

MAX_QUESTION_CHARS = 2000
MAX_INSTANCES = 16


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    profile: dict[str, float]

    @field_validator("question")
    @classmethod
    def _question(cls, q: str) -> str:
        q = q.strip()
        if not q:
            raise ValueError("must not be empty")
        if len(q) > MAX_QUESTION_CHARS:
            raise ValueError(f"is {len(q)} characters long, the limit is {MAX_QUESTION_CHARS}")
        return q

    @field_validator("profile", mode="before")
    @classmethod
    def _profile(cls, p, info: ValidationInfo):
        if not isinstance(p, dict):
            raise ValueError("must be an object mapping moral values to weights in [0, 1]")
        values = (info.context or {}).get("values") or []
        errors = []
        for k, w in p.items():
            if values and k not in values:
                errors.append(f"{k!r} is not a moral value of this service (known: {', '.join(values)})")
            elif isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= 1:
                errors.append(f"weight of {k!r} must be a finite number in [0, 1], got {w!r}")
        if errors:
            raise ValueError("; ".join(errors))
        # Values left out of the profile weigh 0 (their agents are skipped).
        return {v: float(p.get(v, 0.0)) for v in values} if values else {k: float(w) for k, w in p.items()}


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=64, ge=1, le=512)
    # Generate at least this many tokens (end-of-sequence ignored before): fixed-length answers for benchmarks.
    min_new_tokens: int = Field(default=0, ge=0, le=512)
    scores: bool = True

    @model_validator(mode="after")
    def _min_le_max(self):
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) must be ≤ max_new_tokens ({self.max_new_tokens})")
        return self


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Instance] = Field(min_length=1, max_length=MAX_INSTANCES)
    parameters: Parameters = Parameters()


def error_message(e: ValidationError) -> str:
    """'instances.0.profile: weight of …' — the field path first, so clients see what to fix."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_request(body, values: list[str]) -> PredictRequest:
    """Validate a V1 body against the service's moral values; raises kserve InvalidInput (400)."""
    from kserve.errors import InvalidInput

    if not isinstance(body, dict):
        raise InvalidInput("body: expected a JSON object with an 'instances' list")
    try:
        return PredictRequest.model_validate(body, context={"values": values})
    except ValidationError as e:
        raise InvalidInput(error_message(e)) from None
