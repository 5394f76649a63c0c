from fastapi import APIRouter, Depends

from app.auth.dependencies import current_user

router = APIRouter(prefix="/credits", tags=["credits"], dependencies=[Depends(current_user)])
