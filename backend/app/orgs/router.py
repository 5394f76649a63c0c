from fastapi import APIRouter, Depends

from app.auth.dependencies import current_user

router = APIRouter(prefix="/organizations", tags=["organizations"], dependencies=[Depends(current_user)])
invitations_router = APIRouter(prefix="/invitations", tags=["organizations"], dependencies=[Depends(current_user)])
