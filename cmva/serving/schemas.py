"""Request validation for the CMVA endpoints: bad input → InvalidInput (HTTP 400) naming the field.

The transformer and the predictors validate with the same models (question, profile, parameters):
transformer: {"instances": [{"question": "...", "profile": {"care": 1.0, ...}}], "parameters": {...}}
agent:       {"instances": [{"question": "...", "values": ["care", ...]}], "parameters": {...}}
aggregator:  {"instances": [{"question": "...", "profile": {...}, "answers": {"care": "..."}}], "parameters": {...}}
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_QUESTION_CHARS = 2000
MAX_INSTANCES = 16


def _question(q: str) -> str:
    q = q.strip()
    if not q:
        raise ValueError("must not be empty")
    if len(q) > MAX_QUESTION_CHARS:
        raise ValueError(f"is {len(q)} characters long, the limit is {MAX_QUESTION_CHARS}")
    return q


def _profile(p, info: ValidationInfo):
    """A valid profile over the service's values; values left out of it weigh 0 (their agents are skipped)."""
    p = _checked_profile(p, info)
    values = _values(info)
    return {v: p.get(v, 0.0) for v in values} if values else p


def _checked_profile(p, info: ValidationInfo):
    """A valid profile, as given (known values, finite weights in [0, 1])."""
    if not isinstance(p, dict):
        raise ValueError("must be an object mapping moral values to weights in [0, 1]")
    values = _values(info)
    errors = []
    for k, w in p.items():
        if values and k not in values:
            errors.append(f"{k!r} is not a moral value of this service (known: {', '.join(values)})")
        elif isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= 1:
            errors.append(f"weight of {k!r} must be a finite number in [0, 1], got {w!r}")
    if errors:
        raise ValueError("; ".join(errors))
    return {k: float(w) for k, w in p.items()}


def _values(info: ValidationInfo) -> list[str]:
    """The moral values of the service validating (passed as validation context)."""
    return (info.context or {}).get("values") or []


def _known(names, info: ValidationInfo, what: str):
    values = _values(info)
    unknown = [n for n in names if values and n not in values]
    if unknown:
        raise ValueError(f"{unknown} {what} (serving {values})")
    return names


Question = Annotated[str, AfterValidator(_question)]
Profile = Annotated[dict[str, float], BeforeValidator(_profile)]
# The aggregator sees the profile as the transformer sent it (the same keys, in the same order as in training).
GivenProfile = Annotated[dict[str, float], BeforeValidator(_checked_profile)]


class Instance(BaseModel):
    """A transformer instance: the question and the moral profile c."""

    model_config = ConfigDict(extra="forbid")

    question: Question
    profile: Profile


class AgentInstance(BaseModel):
    """An agent predictor instance: the question and the values to answer it for (default: all served)."""

    model_config = ConfigDict(extra="forbid")

    question: Question
    values: list[str] | None = Field(default=None, min_length=1)

    @field_validator("values")
    @classmethod
    def _served(cls, values: list[str] | None, info: ValidationInfo):
        return None if values is None else _known(values, info, "not served here")


class AggregatorInstance(BaseModel):
    """An aggregator predictor instance: question, profile and the agents' answers, keyed by value."""

    model_config = ConfigDict(extra="forbid")

    question: Question
    profile: GivenProfile
    answers: dict[str, str] = {}

    @field_validator("answers")
    @classmethod
    def _answer_values(cls, answers: dict[str, str], info: ValidationInfo):
        _known(list(answers), info, "are not moral values of this service")
        return answers


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


class AgentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[AgentInstance] = Field(min_length=1, max_length=MAX_INSTANCES)
    parameters: Parameters = Parameters()


class AggregatorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[AggregatorInstance] = Field(min_length=1, max_length=MAX_INSTANCES)
    parameters: Parameters = Parameters()


class AgentPrediction(BaseModel):
    """What the transformer accepts from an agent predictor (anything else: the agent is treated as failed)."""

    answers: dict[str, str]
    scores: dict[str, dict[str, float]] = {}


class AgentResponse(BaseModel):
    predictions: list[AgentPrediction]


def error_message(e: ValidationError) -> str:
    """'instances.0.profile: weight of …' — the field path first, so clients see what to fix."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _validate(model: type[BaseModel], body, values: list[str]):
    """Validate a V1 body against the service's moral values; raises kserve InvalidInput (400)."""
    from kserve.errors import InvalidInput

    if not isinstance(body, dict):
        raise InvalidInput("body: expected a JSON object with an 'instances' list")
    try:
        return model.model_validate(body, context={"values": values})
    except ValidationError as e:
        raise InvalidInput(error_message(e)) from None


def parse_request(body, values: list[str]) -> PredictRequest:
    """A transformer request (profiles over the service's values)."""
    return _validate(PredictRequest, body, values)


def parse_agent_request(body, served: list[str]) -> AgentRequest:
    """An agent predictor request (values among those it serves)."""
    return _validate(AgentRequest, body, served)


def parse_aggregator_request(body, values: list[str]) -> AggregatorRequest:
    """An aggregator predictor request (profile and answers over the service's values)."""
    return _validate(AggregatorRequest, body, values)
