"""Every domain router, in matching order; app.main adds them under /api/v1 (health stays at the root)."""

from fastapi import APIRouter

from app.admin.router import router as admin_router
from app.auth.router import router as auth_router
from app.credits.router import router as credits_router
from app.orgs.router import invitations_router
from app.orgs.router import router as orgs_router
from app.users.router import router as users_router

API_ROUTERS: tuple[APIRouter, ...] = (
    auth_router,
    users_router,
    credits_router,
    orgs_router,
    invitations_router,
    admin_router,
)
