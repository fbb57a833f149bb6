from typing import Annotated

from fastapi import Depends, Query

from app.api.deps import UserDb, require
from app.api.routing import ApiRouter
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.analytics import AnalyticsSummary
from app.schemas.common import error_responses
from app.services import analytics_service

router = ApiRouter(prefix="/analytics", tags=["analytics"])


@router.get("/summary", operation_id="analytics_summary", responses=error_responses(401, 403))
async def family_summary(
    actor: Annotated[Actor, Depends(require(Permission.VIEW_ANALYTICS))],
    db: UserDb,
    days: Annotated[
        int, Query(ge=1, le=366, description="Window in days, ending today (UTC).")
    ] = 30,
) -> AnalyticsSummary:
    """What your family shared over the last `days` days: totals, top contributors, per day.

    Counts are of what still exists: a deleted memory or reaction, or a deleted
    comment, no longer counts on the day it was created. Drafts (and the reactions and
    comments on them) count only once published: the summary shows nothing its reader
    could not open.
    """
    return await analytics_service.summary(db, actor, days=days)
