"""Live updates: the ticket a browser's EventSource opens GET /events with."""

from pydantic import BaseModel, Field


class EventTicket(BaseModel):
    ticket: str = Field(description="Single use: open `GET /events?ticket=...` with it once.")
    expires_in: int = Field(description="Seconds the ticket can be used in.", examples=[60])
