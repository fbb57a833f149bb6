"""Shapes shared by every router."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints


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
    """Every error body (docs/api.md, "Errors"): a sentence for people, a code for programs."""

    detail: str
    code: str | None = Field(
        default=None,
        description="Stable snake_case name a client can branch on.",
        examples=["not_found"],
    )
    request_id: str | None = Field(default=None, description="Quote it when reporting a problem.")


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationErrorItem]


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` for the error codes an operation can return."""
    return {code: {"model": ErrorOut} for code in codes}
