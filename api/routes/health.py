"""``/healthz``: the process answers (no token, not in /docs): for load balancers and `up`."""
from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
