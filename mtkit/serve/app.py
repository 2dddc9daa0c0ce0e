"""The FastAPI application: routes, request validation, JSON errors and the API key.

Every error is JSON, ``{"error": CODE, "message": TEXT}``, plus ``"limit"`` and ``"allowed"``
when a request exceeds one of the server's limits. The request body is read and checked here
(size, UTF-8, JSON, types, limits) before anything is queued, so a bad request never reaches
the decoder.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import json
import time
from importlib import resources
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtkit import __version__
from mtkit.decoding import SearchOptions
from mtkit.serve.batching import Batcher, Job, QueueFull
from mtkit.serve.models import ServedModel, Work
from mtkit.serve.settings import ServeSettings

OPEN_PATHS = {"/health"}  # answered without the API key
PAGE_ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/static/app.js": ("app.js", "text/javascript; charset=utf-8"), "/static/style.css": ("style.css", "text/css; charset=utf-8")}


class TranslateRequest(BaseModel):
    """The body of POST /translate."""

    model_config = ConfigDict(strict=True, extra="forbid")

    text: list[str] = Field(min_length=1, description="Sentences to translate, one per item (no line breaks).")
    model: Optional[str] = Field(None, description="A name from GET /models; omitted: the first model.")
    beam: int = Field(1, ge=1, description="Beam size; 1 is greedy search.")
    nbest: Optional[int] = Field(None, ge=1, description="Also return the N best hypotheses (N <= beam) with scores.")
    alpha: float = Field(0.75, ge=0, allow_inf_nan=False, description="Length normalisation: rank by log P / L^alpha.")
    attention: bool = Field(False, description="Also return each best translation's attention matrix.")


class Hypothesis(BaseModel):
    text: str
    score: float
    log_prob: float


class Attention(BaseModel):
    source: list[str]
    target: list[str]
    weights: list[list[float]] = Field(description="One row per target token, one column per source token.")


class TranslateResponse(BaseModel):
    translations: list[str]
    nbest: Optional[list[list[Hypothesis]]] = None
    attention: Optional[list[Optional[Attention]]] = None
    model: str
    milliseconds: float
    batch: dict[str, int] = Field(description="The decode that served this request: its requests and lines.")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.extra = status, code, message, headers, extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers, **self.extra)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


class State:
    """What the routes share: the settings, the models (loaded or not yet) and the queue."""

    def __init__(self, settings: ServeSettings, models: list[ServedModel], batcher: Batcher) -> None:
        self.settings, self.batcher = settings, batcher
        self.models = {m.name: m for m in models}
        self.default = models[0].name
        self.ready = False
        self.started = time.time()


def create_app(state: State) -> FastAPI:
    app = FastAPI(
        title="mtkit", version=__version__,
        description="Neural machine translation with mtkit's models: POST /translate, GET /models, GET /health.",
    )
    _add_error_handlers(app)
    _add_routes(app, state)
    app.add_middleware(Guard, settings=state.settings)
    if state.settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=state.settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        )
    return app


def _add_routes(app: FastAPI, state: State) -> None:
    pages = {path: (resources.files("mtkit.serve").joinpath("static", name).read_bytes(), kind) for path, (name, kind) in PAGE_ASSETS.items()}

    def page(path: str):
        body, kind = pages[path]

        async def send_page() -> Response:
            return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

        return send_page

    for path in pages:
        app.add_api_route(path, page(path), methods=["GET"], include_in_schema=False)

    @app.get("/health", summary="Ready once every model is loaded (503 before)")
    async def health() -> JSONResponse:
        if not state.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready", "models": list(state.models)})

    @app.get("/models", summary="The models served: languages, settings, parameters, best dev BLEU")
    async def models() -> JSONResponse:
        _require_ready(state)
        return JSONResponse({"default": state.default, "limits": _limits(state.settings), "models": [m.info for m in state.models.values()]})

    @app.get("/stats", summary="Requests served, decodes and how many requests each decode served")
    async def stats() -> JSONResponse:
        return JSONResponse({"uptime_seconds": round(time.time() - state.started, 1), **state.batcher.stats()})

    @app.post(
        "/translate", summary="Translate sentences (batched with other requests)", response_model=TranslateResponse,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": TranslateRequest.model_json_schema()}}}},
    )
    async def translate(request: Request) -> JSONResponse:
        started = time.perf_counter()
        body = parse_request(await _read_body(request, state.settings), state)
        served, work = _work(body, state)
        loop = asyncio.get_running_loop()
        job = Job(group=(served.name, dataclasses.astuple(work.options)), lines=body.text, payload=work, future=loop.create_future(), loop=loop)
        try:
            state.batcher.submit(job)
        except QueueFull as full:
            raise ApiError(503, "queue_full", "the server is busy: too many sentences are waiting; retry later",
                           {"Retry-After": str(full.retry_after)}, limit="max_queue", allowed=state.settings.max_queue) from None
        try:
            answer = await asyncio.wait_for(job.future, state.settings.timeout)
        except asyncio.TimeoutError:
            state.batcher.cancel(job)
            raise ApiError(504, "timeout", f"not translated within {state.settings.timeout:g} s", limit="timeout",
                           allowed=state.settings.timeout) from None
        answer["model"] = served.name
        answer["milliseconds"] = round((time.perf_counter() - started) * 1000, 1)
        answer["batch"] = {"requests": job.batch[0], "lines": job.batch[1]}
        return JSONResponse(answer)


def _require_ready(state: State) -> None:
    if not state.ready:
        raise ApiError(503, "loading", "the models are still loading", {"Retry-After": "1"})


def _limits(settings: ServeSettings) -> dict[str, Any]:
    return {"max_lines": settings.max_lines, "max_chars": settings.max_chars, "max_beam": settings.max_beam,
            "timeout": settings.timeout}


async def _read_body(request: Request, settings: ServeSettings) -> bytes:
    """The body, refused past ``max_body_bytes`` without reading the rest."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"send JSON with Content-Type: application/json (not {kind})")
    limit = settings.max_body_bytes
    too_big = ApiError(413, "body_too_large", f"the request body exceeds {limit:,} bytes", limit="max_body_bytes", allowed=limit)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        if int(declared) <= 8 * limit:  # read it anyway: closing on unread data would reset the answer
            async for _ in request.stream():
                pass
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(raw: bytes, state: State) -> TranslateRequest:
    """Bytes → a checked request, or an ``ApiError`` that says what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    try:
        body = TranslateRequest.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ApiError(422, "invalid_request", "; ".join(problems[:5])) from None
    _check_limits(body, state.settings)
    return body


def _check_limits(body: TranslateRequest, settings: ServeSettings) -> None:
    if len(body.text) > settings.max_lines:
        raise ApiError(413, "too_many_lines", f"{len(body.text)} lines in one request; at most {settings.max_lines}",
                       limit="max_lines", allowed=settings.max_lines)
    for i, line in enumerate(body.text):
        if len(line) > settings.max_chars:
            raise ApiError(413, "line_too_long", f"text[{i}] has {len(line):,} characters; at most {settings.max_chars:,}",
                           limit="max_chars", allowed=settings.max_chars)
        if "\n" in line or "\r" in line:
            raise ApiError(422, "line_break", f"text[{i}] holds a line break: send one sentence per item")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, "invalid_text", f"text[{i}] holds a lone surrogate (not a Unicode character)") from None
    if body.beam > settings.max_beam:
        raise ApiError(422, "beam_too_large", f"beam {body.beam} exceeds the limit {settings.max_beam}",
                       limit="max_beam", allowed=settings.max_beam)
    if body.nbest is not None and body.nbest > body.beam:
        raise ApiError(422, "nbest_exceeds_beam", f"nbest {body.nbest} exceeds beam {body.beam}")


def _work(body: TranslateRequest, state: State) -> tuple[ServedModel, Work]:
    _require_ready(state)
    name = body.model or state.default
    served = state.models.get(name)
    if served is None:
        raise ApiError(422, "unknown_model", f"no model named {name!r}; this server has {', '.join(state.models)}")
    if body.attention and not served.has_attention:
        raise ApiError(422, "no_attention", f"model {name!r} has no attention (attention = none)")
    max_len_a, max_len_b = served.translator.model.config.length_limit()  # as translate's default
    options = SearchOptions(beam=body.beam, alpha=body.alpha, nbest=body.nbest or 1, max_len_a=max_len_a, max_len_b=max_len_b)
    return served, Work(served, options, nbest=body.nbest is not None, attention=body.attention)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc.errors()[:3]))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")


class Guard:
    """Pure ASGI middleware: refuses requests without the API key (except /health) and, on a
    loopback server without a key, requests whose Host is not this machine."""

    LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

    def __init__(self, app, settings: ServeSettings) -> None:
        self.app = app
        self.key = settings.api_key.encode() if settings.api_key else None
        # Without a key, a loopback server could be reached from a web page through DNS
        # rebinding: answer only requests addressed to this machine by name or address.
        self.hosts = self.LOCAL_HOSTS | {settings.host.strip("[]")} if settings.loopback and not self.key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            refusal = self._refusal(scope["path"], headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> Response | None:
        if self.hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
            if name not in self.hosts:
                return error_response(421, "wrong_host", f"this server answers to localhost only, not {host!r}")
        if self.key is None or path in OPEN_PATHS or self._authorized(headers):
            return None
        # Basic lets a browser ask for the key (as the password) before showing the page.
        challenge = 'Basic realm="mtkit", charset="UTF-8"' if path in PAGE_ASSETS or path.startswith("/docs") or path == "/openapi.json" else 'Bearer realm="mtkit"'
        return error_response(401, "unauthorized", "missing or wrong API key: send Authorization: Bearer KEY (or X-API-Key: KEY)",
                              {"WWW-Authenticate": challenge})

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if given is None and scheme.lower() == b"bearer":
            given = value.strip()
        elif given is None and scheme.lower() == b"basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(password, self.key) or hmac.compare_digest(user, self.key)
        return given is not None and hmac.compare_digest(given, self.key)
