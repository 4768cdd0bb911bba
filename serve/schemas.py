"""Request and response bodies of the JSON API, as pydantic models: they validate requests and document them in /v1/openapi.json."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from model.labels import LABELS, canonical_role

MAX_MESSAGES = 64
MAX_BODY_BYTES = 1_000_000
MAX_TEXT_CHARS = 2_000
# At least one character that is not whitespace to Python's str.strip (the data format's rule for texts), which also
# strips the separators \x1c-\x1f and \x85 that some regular expression engines do not count as whitespace.
VISIBLE = r"[^\s\x1c-\x1f\x85]"

# Aliases (买家, 客服, merchant …, model.labels.ROLE_ALIASES) become buyer or seller; anything else fails the Literal.
Role = Annotated[Literal["buyer", "seller"], BeforeValidator(lambda name: canonical_role(name) or name)]


class TurnIn(BaseModel):
    """One earlier turn of the conversation."""

    model_config = ConfigDict(strict=True)
    role: Role = Field(description="Who sent the turn.")
    text: str = Field(pattern=VISIBLE, description="What the turn said (not blank).")


class MessageIn(BaseModel):
    """One message to classify, judged with the turns before it."""

    model_config = ConfigDict(strict=True)
    text: str = Field(
        pattern=VISIBLE,
        description=f"The message (not blank); longer than {MAX_TEXT_CHARS:,} characters it is cut and flagged `truncated`.",
    )
    context: list[TurnIn] | None = Field(None, description="Earlier turns of the same conversation, oldest first.")
    id: str | None = Field(None, description="Any id of yours; returned with the result.")
    role: Role | None = Field(None, description="Who sent the message; a seller's message is read as the seller's.")


class ClassifyRequest(BaseModel):
    """Body of POST /v1/classify."""

    model_config = ConfigDict(strict=True)
    messages: list[MessageIn] = Field(min_length=1, description=f"1 to {MAX_MESSAGES} messages (more: 413).")
    evidence: bool = Field(False, description="Also return word scores, amounts, channels, threats and masked identifiers (slower).")


class Result(BaseModel):
    id: str | None
    label: Literal[LABELS]  # type: ignore[valid-type]
    probabilities: dict[str, float] = Field(description="One probability per label, summing to 1.")
    truncated: bool = Field(description="The message or its context was cut to fit the model's window.")
    decided_by: Literal["model", "first_stage"] = Field(
        "model", description="`first_stage`: the cascade's cheap first stage was sure it is normal, and the model was not asked."
    )
    evidence: dict | None = Field(None, description="With `evidence: true`: words (log-odds), amounts, channels, threats, masked ids.")


class ClassifyResponse(BaseModel):
    model_version: str
    results: list[Result] = Field(description="One result per message, in request order.")


class Problem(BaseModel):
    error: str = Field(description="What is wrong with the request.")


def validation_reason(error: ValidationError) -> str:
    """pydantic's errors as one line, with JSON paths like ``messages[0].context[1].role``."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):  # the input would be message text
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        parts.append(f"{path or 'body'}: {item['msg']}")
    return "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")
