from fastapi import APIRouter

router = APIRouter(prefix="/feed", tags=["feed"])
