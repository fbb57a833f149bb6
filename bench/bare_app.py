"""The framework's ceiling: a bare FastAPI app that bench/http_ceilings.py compares against."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
