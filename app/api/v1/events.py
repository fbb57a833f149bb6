from typing import Annotated

from fastapi import Header, Response, status

from app.api.deps import NO_STORE, Context, CurrentUser, StreamUser
from app.api.event_stream import EventStreamResponse
from app.api.routing import ApiRouter
from app.schemas.common import error_responses
from app.schemas.events import EventTicket
from app.services import events_service

router = ApiRouter(prefix="/events", tags=["events"])

# What the stream looks like, for the OpenAPI page (docs/api.md, "Live updates").
_STREAM_EXAMPLE = (
    "retry: 3000\n\nid: 41\n\n"
    'id: 42\nevent: reaction.created\ndata: {"memory_id": "…", "reaction_id": "…", '
    '"user_id": "…", "emoji": "❤️", "reaction_count": 3}\n\n: keep-alive\n\n'
)
MAX_SEQ = 2**63 - 1


@router.post(
    "/ticket",
    operation_id="events_ticket_create",
    status_code=status.HTTP_201_CREATED,
    dependencies=[NO_STORE],
    responses=error_responses(401),
)
async def create_event_ticket(actor: CurrentUser, context: Context) -> EventTicket:
    """A single-use ticket, valid 60 s, to open `GET /events?ticket=` from an EventSource."""
    return await events_service.create_ticket(context.database, actor)


@router.get(
    "",
    operation_id="events_stream",
    # No response_class: the route's errors (401, 422) stay documented as JSON; the stream
    # is returned as a response object and documented here.
    response_class=Response,
    responses={
        200: {
            "description": "Server-Sent Events: the family's live updates.",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": _STREAM_EXAMPLE}
            },
        },
        **error_responses(401, 503),
    },
)
async def stream_events(
    actor: StreamUser,
    context: Context,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_SEQ,
            description="The last `id` received; what followed it is replayed first.",
        ),
    ] = None,
) -> EventStreamResponse:
    """Your family's live updates as Server-Sent Events (docs/api.md, "Live updates")."""
    stream = await events_service.open_stream(context.events, actor, last_event_id=last_event_id)
    return EventStreamResponse(stream)
