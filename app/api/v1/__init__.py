"""Version 1 of the API: every router, under one `router` that `app.main` mounts at /api/v1."""

from app.api.routing import ApiRouter
from app.api.v1 import (
    analytics,
    archive,
    auth,
    events,
    families,
    feed,
    imports,
    invites,
    memories,
    storage,
)

router = ApiRouter()
for _module in (
    auth,
    families,
    imports,
    invites,
    memories,
    storage,
    feed,
    analytics,
    events,
    archive,
):
    router.include_router(_module.router)
