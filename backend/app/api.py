"""Mounts every domain router under /api/v1 (health stays at the root)."""

from fastapi import APIRouter

from app.admin.router import router as admin_router
from app.auth.router import router as auth_router
from app.credits.router import router as credits_router
from app.orgs.router import invitations_router
from app.orgs.router import router as orgs_router
from app.users.router import router as users_router

api_router = APIRouter()
api_router.include_router(auth_router)
api_router.include_router(users_router)
api_router.include_router(credits_router)
api_router.include_router(orgs_router)
api_router.include_router(invitations_router)
api_router.include_router(admin_router)
