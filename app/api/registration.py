"""What every way of joining an existing family records: shared by the auth and invite routes."""

from app.context import AppContext
from app.schemas.auth import Registered
from app.services.analytics_service import EventType


def record_joined(context: AppContext, registration: Registered) -> None:
    """Analytics for a member who joined an existing family through an invite."""
    for event_type in (EventType.USER_REGISTERED, EventType.INVITE_ACCEPTED):
        context.analytics.record(
            event_type,
            user_id=registration.user_id,
            family_unit_id=registration.family_unit_id,
            role=registration.role.value,
        )
