"""OpenAI's wire format: the request bodies, errors in OpenAI's shape, and the completion response body."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

# ---------------------------------------------------------------- errors in OpenAI's shape

class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def server_error() -> ApiError:
    return ApiError(500, "Internal server error.", type="server_error")


def timeout_error(seconds: float) -> ApiError:
    return ApiError(504, f"The request took longer than {seconds} s.", type="timeout", code="timeout")


def invalid_value(param: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


def error_response(err: ApiError):
    from fastapi.responses import JSONResponse
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def api_error(request, err: ApiError):
    """The exception handler of ApiError."""
    return error_response(err)


async def invalid_request(request, err: RequestValidationError):
    """The exception handler of a body that is not JSON (400 invalid_json) or not the schema (400 invalid_value)."""
    first = err.errors()[0]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return error_response(ApiError(400, f"We could not parse the JSON body of your request ({reason}).",
                                       code="invalid_json"))
    param = ".".join(str(p) for p in first["loc"] if p != "body")
    if not param:  # the body is JSON, but not an object
        return error_response(ApiError(400, f"The body of your request is invalid: {first['msg']}.",
                                       code="invalid_value"))
    return error_response(invalid_value(param, f"{first['msg']}."))


async def http_error(request, err):
    """The exception handler of Starlette's HTTPException (no such route: 404, wrong method: 405): OpenAI's
    shape, as for every other error."""
    where = f"{request.method} {request.url.path}"
    if err.status_code == 404:
        message = f"Invalid URL ({where})."
    elif err.status_code == 405:
        message = f"Method not allowed ({where}); allowed: {(err.headers or {}).get('Allow', 'none')}."
    else:
        message = f"{err.detail} ({where})."
    return error_response(ApiError(err.status_code, message, type="server_error" if err.status_code >= 500
                                   else "invalid_request_error", headers=err.headers))


async def within(coros: list, seconds: float) -> list:
    """The results of `coros`, run concurrently, or a 504 once they have taken `seconds`. A single one runs in the
    request's own task (asyncio.gather and wait_for would each start another: a cost on every request)."""
    try:
        async with asyncio.timeout(seconds):
            return [await coros[0]] if len(coros) == 1 else list(await asyncio.gather(*coros))
    except TimeoutError:
        raise timeout_error(seconds) from None


# ---------------------------------------------------------------- request bodies

INT64 = (-2 ** 63, 2 ** 63 - 1)  # OpenAI's range of `seed`


class CompletionRequest(BaseModel):
    """Every number is range-checked (a 400 naming the field), those we ignore too, with OpenAI's bounds."""
    model_config = ConfigDict(extra="ignore")  # other OpenAI fields we do not implement (echo, suffix) are ignored
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)  # and at most serve.max_tokens_limit (Completions.checked)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=INT64[0], le=INT64[1])
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    user: str | None = None
    # accepted and ignored, as before, but only within OpenAI's ranges
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = Field(None, ge=0, le=20)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    input: str | list[str]
    user: str | None = None


async def parse_body(request: Request, schema: type[BaseModel], max_bytes: int):
    """The request body as `schema`: over `max_bytes` -> 413, malformed or invalid -> 400 (by `invalid_request`)."""
    body = await request.body()  # a chunked body has no content-length: check what arrived
    if len(body) > max_bytes:
        raise ApiError(413, f"Request body over the limit of {max_bytes} bytes.", code="body_too_large")
    try:
        return schema.model_validate_json(body)
    except ValueError as err:  # pydantic's ValidationError, incl. malformed JSON
        raise RequestValidationError(err.errors()) from None


# ---------------------------------------------------------------- response bodies

def completion_head(req: CompletionRequest, model_name: str) -> dict:
    """What every completion body and stream chunk starts with: id, object, created, model."""
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": req.model or model_name}


def completion_body(head: dict, results: list[dict]) -> dict:
    """A whole completion response: one choice per answer, and the tokens used."""
    return {**head,
            "choices": [{"text": r["text"], "index": i, "logprobs": None, "finish_reason": r["finish_reason"]}
                        for i, r in enumerate(results)],
            "usage": {"prompt_tokens": sum(r["prompt_tokens"] for r in results),
                      "completion_tokens": sum(r["completion_tokens"] for r in results),
                      "total_tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in results)}}
