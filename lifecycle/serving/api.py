"""OpenAI's wire format: the request bodies, errors in OpenAI's shape, and the completion response body."""
from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

# ---------------------------------------------------------------- errors in OpenAI's shape

class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def server_error() -> ApiError:
    return ApiError(500, "Internal server error.", type="server_error")


def timeout_error(seconds: float) -> ApiError:
    return ApiError(504, f"The request took longer than {seconds} s.", type="timeout", code="timeout")


def error_response(err: ApiError):
    from fastapi.responses import JSONResponse
    return JSONResponse(err.body(), status_code=err.status)


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
    param = ".".join(str(p) for p in first["loc"] if p != "body") or None
    return error_response(ApiError(400, f"Invalid value for '{param}': {first['msg']}.", param=param,
                                   code="invalid_value"))


async def within(coro, seconds: float):
    """`coro`'s result, or a 504 once it has taken `seconds`."""
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        raise timeout_error(seconds) from None


# ---------------------------------------------------------------- request bodies

class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI fields we do not implement (logprobs, user...) are ignored
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    user: str | None = None


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
