from fastapi import APIRouter

router = APIRouter(prefix="/storage", tags=["storage"])
