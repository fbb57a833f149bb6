"""What every avatar change schedules after its commit: shared by the auth and family routes."""

from fastapi import BackgroundTasks

from app.context import AppContext
from app.services import storage_service
from app.services.avatar_service import AvatarChange


def schedule_avatar_work(tasks: BackgroundTasks, context: AppContext, change: AvatarChange) -> None:
    """Process a newly uploaded avatar; remove the files of the one it replaced."""
    if change.media_id is not None:
        tasks.add_task(context.media.process, [change.media_id])
    if change.removed_paths:
        tasks.add_task(storage_service.remove_objects, context.storage, change.removed_paths)
