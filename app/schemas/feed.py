"""Feed, reaction and comment shapes (what OpenAPI shows for /feed)."""

from datetime import date, datetime
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from app.schemas.common import MAX_CURSOR_LENGTH, NEXT_CURSOR_DESCRIPTION, NoNul
from app.schemas.memories import MAX_TAG_LENGTH, MAX_TAGS, Media, Memory, MemoryAuthor

Emoji = Literal["👍", "❤️", "😂", "😮", "😢", "🎉", "🔥", "💯"]
OrderBy = Literal["feed_score", "created_at", "memory_date"]
OrderDirection = Literal["desc", "asc"]

MAX_SEARCH_LENGTH = 200
SearchText = Annotated[str, StringConstraints(max_length=MAX_SEARCH_LENGTH), NoNul]

CommentContent = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=5000),
    NoNul,
    Field(description="1–5 000 characters (surrounding whitespace is trimmed)."),
]


# Reactions ------------------------------------------------------------------------------------


class ReactionCreate(BaseModel):
    emoji: Emoji


class Reaction(BaseModel):
    id: UUID
    memory_id: UUID
    user_id: UUID
    emoji: Emoji
    created_at: datetime
    updated_at: datetime


# Comments -------------------------------------------------------------------------------------


class CommentCreate(BaseModel):
    content: CommentContent
    parent_comment_id: UUID | None = Field(
        default=None,
        description="Reply to this comment (same memory; at most 3 levels below a top-level one).",
    )


class CommentUpdate(BaseModel):
    content: CommentContent


class Comment(BaseModel):
    id: UUID
    memory_id: UUID
    user_id: UUID
    author: MemoryAuthor
    parent_comment_id: UUID | None
    content: str = Field(description='"[deleted]" once the comment is deleted.')
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    reply_count: int = Field(description="Direct replies, deleted ones included.")
    imported: bool = Field(
        default=False,
        description="Brought in by an import of a Timeless export: its text, date, thread and "
        "author are the archive's.",
    )
    imported_author_name: str | None = Field(
        default=None,
        description="Set when the comment was imported and its author is not a member of "
        "this family: the name they had in the archive, which `author.display_name` shows. "
        "`user_id` and `author.id` are then the member who imported it (who may edit or "
        "delete it).",
    )
    replies: list["Comment"] = Field(
        default_factory=list, description="Direct replies, oldest first (nested)."
    )


class CommentPage(BaseModel):
    """Top-level comments (with their replies), one page of a scroll."""

    items: list[Comment]
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


# Feed -----------------------------------------------------------------------------------------


class FeedQuery(BaseModel):
    """GET /feed query parameters."""

    user_id: UUID | None = Field(default=None, description="Only memories by this member.")
    tags: Annotated[str, NoNul] | None = Field(
        default=None,
        description="Comma separated; a memory must carry all of them (case-insensitive).",
    )
    memory_date_from: date | None = Field(default=None, description="memory_date on or after.")
    memory_date_to: date | None = Field(default=None, description="memory_date on or before.")
    search_query: SearchText | None = Field(
        default=None,
        description="Words to find in title, description, location and tags (English "
        'stemming: "picnics" finds "picnic"). Quotes, `or` and `-word` work as in web search.',
    )
    order_by: OrderBy = "feed_score"
    order_direction: OrderDirection = "desc"
    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
        description="The previous page's `next_cursor`: the next page of the same scroll. "
        "Send the same filters and ordering as the first page; not with `page`.",
    )
    limit: int | None = Field(
        default=None, ge=1, le=100, description="The same as `page_size` (either may be sent)."
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tags = [tag.strip().lower() for tag in value.split(",")]
        tags = list(dict.fromkeys(tag for tag in tags if tag))
        if len(tags) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags")
        if any(len(tag) > MAX_TAG_LENGTH for tag in tags):
            raise ValueError(f"each tag must be at most {MAX_TAG_LENGTH} characters")
        return ",".join(tags) or None

    @field_validator("search_query")
    @classmethod
    def _search(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @model_validator(mode="after")
    def _date_range(self) -> Self:
        if (
            self.memory_date_from is not None
            and self.memory_date_to is not None
            and self.memory_date_from > self.memory_date_to
        ):
            raise ValueError("memory_date_from must not be after memory_date_to")
        return self

    @model_validator(mode="after")
    def _paging(self) -> Self:
        # An empty cursor starts a scroll, as no cursor does.
        self.cursor = self.cursor or None
        if self.cursor is not None and "page" in self.model_fields_set:
            raise ValueError("cursor cannot be combined with page")
        if self.limit is not None:
            if "page_size" in self.model_fields_set and self.page_size != self.limit:
                raise ValueError("limit and page_size are the same thing; send one of them")
            self.page_size = self.limit
        return self

    @property
    def tag_list(self) -> list[str] | None:
        return self.tags.split(",") if self.tags else None

    @property
    def binding(self) -> dict[str, object]:
        """What a cursor of this query is bound to: its filters and ordering."""
        return {
            "user_id": self.user_id,
            "tags": sorted(self.tag_list or []),
            "memory_date_from": self.memory_date_from,
            "memory_date_to": self.memory_date_to,
            "search_query": self.search_query,
            "order_by": self.order_by,
            "order_direction": self.order_direction,
        }


class FeedMedia(Media):
    url: str | None = Field(description="Signed download URL of the original.")
    thumbnail_url: str | None = Field(
        description="Signed URL of the thumbnail; null until processing has completed."
    )


class FeedItem(Memory):
    media: list[FeedMedia]  # type: ignore[assignment]
    reaction_count: int
    comment_count: int = Field(description="Comments that are not deleted.")
    reactions_by_emoji: dict[str, int] = Field(examples=[{"❤️": 2, "👍": 1}])
    user_reactions: list[Emoji] = Field(description="The caller's own reactions.")
    top_comments: list[Comment] = Field(
        description="Up to 3 newest top-level comments that are not deleted (no replies)."
    )
    feed_score: float


class Pagination(BaseModel):
    page: int
    page_size: int
    total_pages: int
    has_more: bool


class FeedPage(BaseModel):
    items: list[FeedItem]
    pagination: Pagination
    total_count: int
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)
