from datetime import date
from uuid import UUID

from pydantic import BaseModel


class Contributor(BaseModel):
    user_id: UUID
    display_name: str
    memories: int
    reactions: int
    comments: int


class DailyActivity(BaseModel):
    date: date
    memories: int
    reactions: int
    comments: int


class AnalyticsSummary(BaseModel):
    days: int
    memories_posted: int
    reactions: int
    comments: int
    active_members: int
    top_contributors: list[Contributor]
    daily: list[DailyActivity]
