from fastapi import APIRouter

router = APIRouter(prefix="/memories", tags=["memories"])
