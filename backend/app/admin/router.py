from fastapi import APIRouter, Depends

from app.auth.dependencies import current_superuser

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(current_superuser)])
