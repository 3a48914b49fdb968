"""POST /tokenize: the tokens the model reads in a text, and which ones it knows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request

from app.api.deps import InferenceRuntimeDep, serving_for
from app.api.errors import error_responses
from app.api.responses import model_ref
from app.api.schemas.examples import TOKENIZE_EXAMPLES
from app.api.schemas.tokenize import TokenizedToken, TokenizeRequest, TokenizeResponse
from app.core.errors import InvalidInputError
from app.inference.runtime import Runtime

router = APIRouter(tags=["explorer"])


@router.post("/tokenize", responses=error_responses(400, 401, 404, 413, 415, 422, 503))
async def tokenize(
    body: Annotated[TokenizeRequest, Body(openapi_examples=TOKENIZE_EXAMPLES)],
    runtime: InferenceRuntimeDep,
    request: Request,
) -> TokenizeResponse:
    """Tokens with ids, character offsets, normalised forms and out-of-vocabulary flags."""
    with serving_for(request, runtime, body.model) as serving:
        return await _tokenize(body, serving.runtime)


async def _tokenize(body: TokenizeRequest, runtime: Runtime) -> TokenizeResponse:
    limit = runtime.settings.max_text_chars
    if len(body.text) > limit:
        raise InvalidInputError(
            [
                {
                    "loc": ["body", "text"],
                    "msg": f"text has {len(body.text)} characters; the limit is {limit}",
                    "type": "text_too_long",
                }
            ]
        )
    # Within the character limit (checked first), tokenizing is linear in the text: a short
    # text is tokenized on the event loop, a long one on the runtime's encoding thread.
    vocab = runtime.predictor.vocab
    tokens = [
        TokenizedToken.model_construct(
            text=token.text,
            start=token.start,
            end=token.end,
            id=(id_ := vocab.lookup(token.norm)),
            oov=id_ == vocab.unk_id,
            norm=token.norm,
        )
        for token in await runtime.tokenize(body.text)
    ]
    return TokenizeResponse.model_construct(
        tokens=tokens,
        count=len(tokens),
        oov_count=sum(token.oov for token in tokens),
        model=model_ref(runtime.model),
    )
