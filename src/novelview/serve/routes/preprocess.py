"""``POST /api/preprocess``: an uploaded picture exactly as the model will see it."""

from __future__ import annotations

import io

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import Response

from novelview.serve import schemas
from novelview.serve.state import ServeState, get_state

router = APIRouter(prefix="/api")

UPLOAD_RESPONSES = {
    413: {"model": schemas.ErrorInfo, "description": "upload larger than the limit"},
    422: {"model": schemas.ValidationErrorInfo,
          "description": "not a decodable image, too many pixels or too elongated, or invalid parameters"},
}


@router.post(
    "/preprocess",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the model's input, as PNG"}, **UPLOAD_RESPONSES},
    summary="Preview exactly what the model will see",
)
async def preprocess(
    image: UploadFile = File(..., description="PNG, JPEG, WebP, GIF or BMP"),
    state: ServeState = Depends(get_state),
) -> Response:
    seen = await state.read_upload(image)
    buf = io.BytesIO()
    seen.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})
