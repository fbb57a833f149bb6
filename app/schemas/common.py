"""Shapes shared by every router."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _reject_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refuse it here (422), not as a 500 from the database.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


NoNul = AfterValidator(_reject_nul)
"""For every client string that is stored or sent to the database."""

DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NoNul
]
AvatarUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2048, pattern=r"^https?://\S+$"),
    NoNul,
]


# Cursors (docs/api.md, "Pagination") are query parameters: anything longer is not one of ours.
MAX_CURSOR_LENGTH = 8192
NEXT_CURSOR_DESCRIPTION = (
    "Send it as `cursor` for the next page of this scroll; null on the last page. Pages of "
    "one scroll never repeat or skip an item (docs/api.md, Pagination)."
)


class ErrorOut(BaseModel):
    """Every error body (docs/api.md, "Errors"): a sentence for people, a code for programs.

    Some codes add named fields (`duplicate_media` adds `media_id`), hence open to extras.
    """

    model_config = ConfigDict(extra="allow")

    detail: str = Field(description="One sentence, safe to show to a person.")
    code: str = Field(
        description="Stable snake_case name a client branches on (docs/api.md, error codes).",
        examples=["not_found"],
    )
    request_id: str = Field(description="The response's X-Request-ID; quote it in reports.")


class ValidationErrorItem(BaseModel):
    loc: list[str | int] = Field(
        description="Where: starts with body, query, path or header.", examples=[["body", "title"]]
    )
    msg: str
    type: str = Field(examples=["string_too_long"])


class ValidationErrorOut(ErrorOut):
    """A 422: `code` is `validation_failed`, and `errors` has one entry per field."""

    errors: list[ValidationErrorItem]


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` for the rule-specific error codes an operation can return.

    The statuses every operation of a kind can return (401, 413, 422, 429, 500, 503) are
    declared for it by `app.api.openapi`; list here only what its own rules answer.
    """
    return {code: {"model": ErrorOut} for code in codes}
