"""HTTP API over the same engine calls as the CLI: ``python -m qflow serve`` (uvicorn on 127.0.0.1:8000).

Endpoints
---------
``POST /v1/{module}/plan``
    One per module command (:func:`qflow.core.commands.available_commands`):
    multipart with one file field per input, named as the engine names it
    (``tokens``, ``model_graph``, ...), and a ``config`` form field holding the
    config as JSON (``{}`` or left out for the defaults). Returns the plan JSON;
    the plan is stored in the run store and its id sent in the
    ``X-Qflow-Run-Id`` header. Files the command wrote besides the plan (compress:
    the ``.qfz`` container, decompress: the restored tensors, attention: the
    updated embeddings) are kept with the run; their names are in the
    ``X-Qflow-Artifacts`` header (comma-separated, absent when none).
``GET /v1/runs``
    Run summaries, newest first; ``?module=`` filters, ``?limit=`` bounds.
``GET /v1/runs/{id}``
    One stored run with its plan.
``GET /v1/runs/{id}/artifacts``
    The files a run kept: ``[{"name", "bytes", "sha256"}]`` (empty when none).
``GET /v1/runs/{id}/artifacts/{name}``
    One of them, as an attachment; only names from the listing are served.
``GET /v1/health``
    ``{"status": "ok" | "degraded", "run_store": "ok" | the problem, "runs": {...}, ...}``; no path.

Errors
------
Every error body is ``{"detail": "<source>: <field>: <problem>; expected X, got Y", "error": {...}}``
(the CLI's one line, and its fields): 422 invalid input, infeasible instance
or a malformed request (FastAPI's own validation included); 413 a body over
``QFLOW_MAX_UPLOAD_MB`` or an input over a limit (:mod:`qflow.core.limits`);
400/403/401 a refused Host, Origin or token (:mod:`qflow.core.access`); 403 a
config that sets a server-only field (:data:`SERVER_ONLY_FIELDS`); 429
every run slot and queue place taken; 504 the run passed the request time
budget (``QFLOW_REQUEST_TIME_BUDGET_S``) and was stopped; 503 the run store is
unusable, the server is stopping or misconfigured; 500 a bug (no traceback,
no path). OpenAPI at ``/docs`` and ``/openapi.json``.

Work
----
Engine work runs in threads off the event loop (:class:`qflow.core.runner.EngineRunner`),
``QFLOW_MAX_CONCURRENT_RUNS`` at once and ``QFLOW_MAX_QUEUED_RUNS`` waiting,
so health and the run history answer while plans run. A run past the time
budget, or whose client hung up, is stopped at the engine's next progress
report; worker processes it started are reaped when the runs end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qflow._version import __version__
from qflow.core.access import (
    allowed_hosts,
    allowed_origins,
    configured_token,
    host_of,
    is_loopback,
    run_slots,
    token_matches,
)
from qflow.core.artifacts import ArtifactStore, media_type
from qflow.core.commands import ModuleCommand, available_commands
from qflow.core.errors import InputError, QflowError
from qflow.core.io import parse_json_text
from qflow.core.limits import LimitExceededError, limit_value
from qflow.core.runner import EngineRunner, RunCancelled, RunnerBusy, RunTicket
from qflow.core.runs import RunStore, RunStoreError
from qflow.core.uploads import run_on_uploads_keeping_artifacts, sweep_stale_upload_folders

__all__ = ["SERVER_ONLY_FIELDS", "ApiError", "ServerSettings", "app", "artifact_store", "create_app"]

_READ_CHUNK = 1 << 20
#: Commands also answered at ``POST /v1/{name}``, the short route a client of that service expects.
SHORT_ROUTES = frozenset({"kernel"})
#: How often a waiting request checks its client and its time budget, seconds.
_POLL_S = 0.1
#: Longest health waits for the run store, seconds (health must answer within one).
_HEALTH_STORE_WAIT_S = 0.8
#: Paths answered without a token: a load balancer's probe carries none, and health shows nothing private.
_OPEN_PATHS = frozenset({"/v1/health"})
_log = logging.getLogger("qflow.api")
#: Config fields (of any module) that make the server connect somewhere or open a file: a remote caller may not set
#: them, except to the value the server's own environment variable (beside each) already gives.
SERVER_ONLY_FIELDS: dict[str, str] = {"dask_scheduler": "QFLOW_DASK_SCHEDULER", "optuna_storage": "QFLOW_OPTUNA_STORAGE"}


class ApiError(QflowError):
    """A refusal with its HTTP status (and headers), in the one-line format of every other error."""

    def __init__(self, status: int, source: str, field: str, problem: str, expected: str | None = None,
                 received: object = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(source, field, problem, expected, received)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class ServerSettings:
    """What the API enforces, read from the environment once when the app is made (:mod:`qflow.core.access`).

    Attributes
    ----------
    upload_bytes : int
        Largest request body (``QFLOW_MAX_UPLOAD_MB``), bytes.
    token : str or None
        Bearer token every request but health must carry; ``None``: none needed on loopback.
    hosts, origins : tuple of str
        ``Host`` names answered; browser origins allowed besides the API's own.
    max_running, max_queued : int
        Engine runs at once, and requests allowed to wait for a slot.
    bound_host : str
        The interface the server listens on (``--host``); beyond loopback a token is required.
    """

    upload_bytes: int
    token: str | None = dataclasses.field(repr=False)  # never in a log line
    hosts: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    max_running: int = 2
    max_queued: int = 4
    bound_host: str = "127.0.0.1"

    @classmethod
    def from_environment(cls, bound_host: str = "127.0.0.1") -> ServerSettings:
        """The settings from the environment; :class:`InputError` naming the first malformed variable."""
        running, queued = run_slots()
        return cls(int(limit_value("upload_bytes")), configured_token(), allowed_hosts(), allowed_origins(),
                   running, queued, bound_host)


def _error_body(exc: QflowError) -> dict[str, Any]:
    return {"detail": exc.message, "error": exc.to_dict()}


def _error_response(exc: QflowError, status: int | None = None) -> JSONResponse:
    """The error's status (:class:`ApiError`'s, 413 for a limit, else 422) with the one-line body."""
    if status is None:
        status = exc.status if isinstance(exc, ApiError) else 413 if isinstance(exc, LimitExceededError) else 422
    headers = exc.headers if isinstance(exc, ApiError) else None
    return JSONResponse(_error_body(exc), status_code=status, headers=headers)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request", "(body)", "upload too large (QFLOW_MAX_UPLOAD_MB)",
                    f"at most {limit} bytes ({limit / 2**20:g} MiB)", "more")


class _CarriedError(HTTPException):
    """An :class:`ApiError` raised from a middleware's ``receive``: FastAPI's body parsing lets only these through."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, detail=error.message)
        self.error = error


class _BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, before the multipart is parsed.

    A declared ``Content-Length`` over the limit is refused at once; a body
    sent without one is counted as it arrives and refused when it passes the
    limit (an :class:`ApiError` raised from ``receive``, which FastAPI lets
    through its body parsing).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error_response(_too_large(self.limit))(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _CarriedError(_too_large(self.limit))
            return message

        await self.app(scope, counting_receive, send)


def _beyond_loopback(scope: Scope, settings: ServerSettings) -> bool:
    """Whether this connection came in on an interface other machines can reach."""
    server = scope.get("server")
    local = str(server[0]) if server else ""
    try:
        local_is_ip = bool(ipaddress.ip_address(local.strip("[]")))
    except ValueError:
        local_is_ip = False  # an in-process test client names no interface
    return not is_loopback(settings.bound_host) or (local_is_ip and not is_loopback(local))


def _refusal(scope: Scope, settings: ServerSettings) -> ApiError | None:
    """Why this request is refused before it reaches an endpoint (Host, Origin, token), or ``None``."""
    headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers") or []}
    host_header = headers.get("host", "")
    host = host_of(host_header)
    if "*" not in settings.hosts and host not in settings.hosts:
        return ApiError(400, "Host", "(header)", "not an allowed host name (QFLOW_ALLOWED_HOSTS)",
                        "one of " + ", ".join(settings.hosts), host_header or "(none)")
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin.strip().lower())
        same_origin = parts.scheme == scope.get("scheme", "http") and parts.netloc == host_header.strip().lower()
        if not same_origin and origin.strip().rstrip("/").lower() not in settings.origins:
            return ApiError(403, "Origin", "(header)", "cross-origin request refused (QFLOW_ALLOWED_ORIGINS)",
                            "no Origin, the API's own, or an allowed origin", origin)
    elif headers.get("sec-fetch-site") == "cross-site":
        return ApiError(403, "Sec-Fetch-Site", "(header)", "cross-site browser request refused",
                        "a same-origin request or a client outside a browser", "cross-site")
    if scope.get("path") in _OPEN_PATHS:
        return None
    if settings.token is None:
        if _beyond_loopback(scope, settings):
            return ApiError(503, "server", "(access)", "listening beyond loopback without a token; refusing requests",
                            "QFLOW_API_TOKEN or QFLOW_API_TOKEN_FILE set, or --host 127.0.0.1")
        return None
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(given.strip(), settings.token):
        return ApiError(401, "Authorization", "(header)", "missing or wrong bearer token",
                        "Authorization: Bearer <QFLOW_API_TOKEN>", "(none)" if not given else "a different token",
                        headers={"WWW-Authenticate": "Bearer"})
    return None


class _Guard:
    """ASGI middleware: the access checks of :func:`_refusal`; a misconfigured server answers 503 to everything."""

    def __init__(self, app: ASGIApp, settings_of: Callable[[], ServerSettings]) -> None:
        self.app = app
        self.settings_of = settings_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            settings = self.settings_of()
        except InputError as exc:
            await _error_response(exc, 503)(scope, receive, send)
            return
        refused = _refusal(scope, settings)
        if refused is not None:
            await _error_response(refused)(scope, receive, send)
            return
        await _BodyLimit(self.app, settings.upload_bytes)(scope, receive, send)


async def _read_upload(upload: UploadFile, limit: int) -> tuple[str, bytes]:
    """The upload's (file name, bytes), refusing more than ``limit`` bytes (413)."""
    chunks, size = [], 0
    while chunk := await upload.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return upload.filename or "", b"".join(chunks)


def _parse_config(command: ModuleCommand, text: str | None) -> Any:
    """The ``config`` form field (JSON object text; empty means defaults) as the module's config."""
    if text is None or not text.strip():
        data: Any = {}
    else:
        data = parse_json_text(text, "config", "(form field)")
    _refuse_server_only(data)
    return command.config_cls.from_mapping(data, "config")


def _refuse_server_only(data: Any) -> None:
    """A 403 naming the first :data:`SERVER_ONLY_FIELDS` entry set to anything but the server's own value."""
    if not isinstance(data, Mapping):
        return  # the config class refuses a non-mapping with its own message
    for field, env in SERVER_ONLY_FIELDS.items():
        value = data.get(field)
        if value in (None, "") or value == (os.environ.get(env) or None):
            continue
        raise ApiError(403, "config", field, "set by the server only, not by a request",
                       f"the field left out (the server's {env} applies)", "a value")


def artifact_store(store: RunStore) -> ArtifactStore:
    """Where ``store``'s runs keep their files: ``artifacts/`` beside the database (``$QFLOW_HOME/artifacts``)."""
    return ArtifactStore(store.path.parent / "artifacts")


def _run_and_store(command: ModuleCommand, uploads: dict[str, tuple[str, bytes] | None], config: Any,
                   store: RunStore, progress: Callable[[float, str], None]) -> tuple[Any, int, list[str]]:
    """Run ``command``, store the plan, keep the files it wrote under the run's uid: ``(plan, run id, names)``."""

    def keep(plan: Any, files: list[Any]) -> tuple[Any, int, list[str]]:
        progress(1.0, "storing the plan")  # a run cancelled by now is not stored
        run_id = store.save(plan, origin="api")
        return plan, run_id, artifact_store(store).keep(store.get(run_id).uid, files)

    return run_on_uploads_keeping_artifacts(command, uploads, config, keep, progress=progress)


def _consume(future: asyncio.Future[Any]) -> None:
    """Collect the outcome of a run nobody waits for any more (no "exception never retrieved" noise)."""
    if not future.cancelled():
        future.exception()


async def _await_run(request: Request, future: asyncio.Future[Any], ticket: RunTicket, deadline: float,
                     budget_s: float) -> Any:
    """The run's result, or an :class:`ApiError` once the budget is spent or the client is gone (run cancelled)."""
    future.add_done_callback(_consume)
    while not future.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            ticket.cancel(f"over the request time budget of {budget_s:g} s")
            raise ApiError(504, "request", "(time budget)",
                           f"stopped after {budget_s:g} s, over the request time budget (QFLOW_REQUEST_TIME_BUDGET_S); "
                           f"last progress: {ticket.message}",
                           "a smaller input or config, or a larger QFLOW_REQUEST_TIME_BUDGET_S")
        await asyncio.wait({future}, timeout=min(_POLL_S, remaining))
        if not future.done() and await request.is_disconnected():
            ticket.cancel("the client disconnected")
            raise ApiError(499, "request", "(connection)", "client disconnected; run stopped")
    try:
        return future.result()
    except RunCancelled as exc:
        raise ApiError(503, "request", "(run)", f"run stopped: {exc.reason}", "a retry once the server is up") from None


def _plan_endpoint(command: ModuleCommand, store_of: Callable[[], RunStore], settings_of: Callable[[], ServerSettings],
                   runner_of: Callable[[], EngineRunner]) -> Any:
    """``POST /v1/{name}/plan`` for ``command``, with one documented file parameter per input."""

    async def endpoint(request: Request, **kwargs: Any) -> JSONResponse:
        budget_s = limit_value("request_seconds")
        deadline = time.monotonic() + budget_s
        limit = settings_of().upload_bytes
        config = _parse_config(command, kwargs.pop("config", None))
        uploads: dict[str, tuple[str, bytes] | None] = {}
        for input_name in (*command.inputs, *command.optional_inputs):
            upload = kwargs.get(input_name)
            uploads[input_name] = None if upload is None else await _read_upload(upload, limit)
        store, ticket = store_of(), RunTicket()
        try:
            future = runner_of().submit(lambda progress: _run_and_store(command, uploads, config, store, progress),
                                        ticket)
        except RunnerBusy as exc:
            raise ApiError(429, "server", "(run slots)", f"busy: {exc} (QFLOW_MAX_CONCURRENT_RUNS, QFLOW_MAX_QUEUED_RUNS)",
                           "a retry in a few seconds", headers={"Retry-After": "5"}) from None
        plan, run_id, artifacts = await _await_run(request, asyncio.wrap_future(future), ticket, deadline, budget_s)
        headers = {"X-Qflow-Run-Id": str(run_id)}
        if artifacts:
            headers["X-Qflow-Artifacts"] = ",".join(artifacts)
        return JSONResponse(plan.to_dict(), headers=headers)

    parameters = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                          annotation=Annotated[UploadFile, File(description=command.input_help.get(name, name))])
        for name in command.inputs
    ]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[UploadFile | None, File(description=command.input_help.get(name, name))])
        for name in command.optional_inputs
    ]
    fields = ", ".join(command.config_cls.model_fields)
    parameters.append(inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, default="{}",
        annotation=Annotated[str, Form(description=f"The config as a JSON object; fields: {fields}. Missing fields "
                                                   "take their defaults.")]))
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=JSONResponse)  # type: ignore[attr-defined]
    endpoint.__name__ = f"plan_{command.name}"
    return endpoint


def _advise_endpoint(command: ModuleCommand, settings_of: Callable[[], ServerSettings],
                     runner_of: Callable[[], EngineRunner]) -> Any:
    """``POST /v1/{name}/advise``: the /plan form plus ``goal`` and ``budget_s``; returns the advice plan (not stored)."""
    from qflow.advisor import GOALS
    from qflow.advisor._uploads import advise_on_uploads

    async def endpoint(request: Request, **kwargs: Any) -> JSONResponse:
        request_s = limit_value("request_seconds")
        deadline = time.monotonic() + request_s
        goal, budget_s = kwargs.pop("goal"), kwargs.pop("budget_s")
        if goal not in GOALS:
            raise InputError("advise", "goal", "unknown goal", " | ".join(GOALS), goal)
        if not 0 < budget_s <= request_s:
            raise InputError("advise", "budget_s", "out of range", f"0 < seconds <= {request_s:g} (the request budget)",
                             budget_s)
        limit = settings_of().upload_bytes
        config = _parse_config(command, kwargs.pop("config", None))
        uploads: dict[str, tuple[str, bytes] | None] = {}
        for input_name in (*command.inputs, *command.optional_inputs):
            upload = kwargs.get(input_name)
            uploads[input_name] = None if upload is None else await _read_upload(upload, limit)

        def advise(progress: Callable[[float, str], None]) -> Any:
            return advise_on_uploads(command.name, uploads, config, goal, budget_s, progress)

        ticket = RunTicket()
        try:
            future = runner_of().submit(advise, ticket)
        except RunnerBusy as exc:
            raise ApiError(429, "server", "(run slots)", f"busy: {exc} (QFLOW_MAX_CONCURRENT_RUNS, QFLOW_MAX_QUEUED_RUNS)",
                           "a retry in a few seconds", headers={"Retry-After": "5"}) from None
        plan = await _await_run(request, asyncio.wrap_future(future), ticket, deadline, request_s)
        return JSONResponse(plan.to_dict())

    endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        *inspect.signature(_plan_endpoint(command, lambda: None, settings_of, runner_of)).parameters.values(),
        inspect.Parameter("goal", inspect.Parameter.KEYWORD_ONLY, default="balanced",
                          annotation=Annotated[str, Form(description="quality | speed | balanced")]),
        inspect.Parameter("budget_s", inspect.Parameter.KEYWORD_ONLY, default=60.0,
                          annotation=Annotated[float, Form(description="Stop launching candidates after this many "
                                                                       "seconds")]),
    ], return_annotation=JSONResponse)
    endpoint.__name__ = f"advise_{command.name}"
    return endpoint


#: Where FastAPI's validation locations point, for the one-line message.
_LOCATIONS = {"body": "request body", "query": "query string", "path": "URL path", "header": "headers",
              "cookie": "cookies"}


def _validation_error(exc: RequestValidationError) -> InputError:
    """FastAPI's list of validation errors as one :class:`InputError` (the first, with how many more)."""
    errors = list(exc.errors())
    if not errors:
        return InputError("request", "(request)", "invalid request")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    source = _LOCATIONS.get(loc[0], "request") if loc else "request"
    field = ".".join(loc[1:]) or "(request)"
    kind = str(first.get("type", ""))
    problem = str(first.get("msg", "invalid")).rstrip(".").lower()
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more: {', '.join('.'.join(map(str, e.get('loc', ())[1:])) for e in errors[1:])})"
    if kind == "missing":
        expected = f"a multipart field {field!r}" if source == "request body" else f"a value for {field!r}"
        return InputError(source, field, problem, expected)
    if "uploadfile" in problem:  # a plain form value where a file belongs
        return InputError(source, field, "not a file upload", f"a multipart file field {field!r}", "a form value")
    ctx = first.get("ctx") or {}
    expected = ", ".join(f"{key} {value}" for key, value in ctx.items() if key != "error") or None
    received = first.get("input")
    return InputError(source, field, problem, expected, None if isinstance(received, dict | list) else received)


def _install_error_handlers(api: FastAPI) -> None:
    """Every error, the framework's own included, as ``{"detail": one line, "error": {...}}``."""

    @api.exception_handler(QflowError)
    async def qflow_error(request: Request, exc: QflowError) -> JSONResponse:
        return _error_response(exc)

    @api.exception_handler(RunStoreError)
    async def store_error(request: Request, exc: RunStoreError) -> JSONResponse:
        # The service's own database, not the caller's input: 503, with the reason but never its path.
        return _error_response(QflowError("run store", exc.field, exc.problem, exc.expected), 503)

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_error(exc), 422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, _CarriedError):
            return _error_response(exc.error)
        problem = str(exc.detail).rstrip(".").lower() if exc.detail else "refused"
        error = QflowError("request", request.url.path, problem, "an endpoint and method listed at /docs"
                           if exc.status_code in (404, 405) else None, request.method)
        return _error_response(error, exc.status_code)

    @api.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error in %s %s", request.method, request.url.path)
        error = QflowError("server", "(internal)", f"internal error (a bug in qflow): {type(exc).__name__}",
                           "no error; please report it with the request")
        return _error_response(error, 500)


def _store_problem(store: RunStore) -> str | None:
    return store.health_problem(timeout_s=_HEALTH_STORE_WAIT_S / 2)


def create_app(store: RunStore | None = None, max_upload_mb: float | None = None, *,
               settings: ServerSettings | None = None, commands: Sequence[ModuleCommand] | None = None,
               bound_host: str = "127.0.0.1") -> FastAPI:
    """The API; ``store`` defaults to the run store at ``$QFLOW_HOME/runs.db`` (read per request).

    ``settings`` default to :meth:`ServerSettings.from_environment` (read
    once, here; a malformed variable makes every request a 503 naming it,
    which ``qflow serve`` checks before starting). ``max_upload_mb``
    overrides their upload limit; ``commands`` (default: every module's)
    are the plan endpoints; ``bound_host`` is the interface served on.
    """
    try:
        resolved = settings or ServerSettings.from_environment(bound_host)
        if max_upload_mb is not None:
            resolved = dataclasses.replace(resolved, upload_bytes=int(max_upload_mb * 2**20))
        settings_error: InputError | None = None
    except InputError as exc:
        resolved, settings_error = None, exc
    runner = EngineRunner(resolved.max_running, resolved.max_queued) if resolved else EngineRunner(1, 0)
    commands = list(available_commands() if commands is None else commands)

    def settings_of() -> ServerSettings:
        if resolved is None:
            raise settings_error  # type: ignore[misc]
        return resolved

    def store_of() -> RunStore:
        return store if store is not None else RunStore()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(sweep_stale_upload_folders)
        yield
        runner.cancel_all("the server is stopping")

    api = FastAPI(
        title="QuantumFlow API",
        version=__version__,
        description="Planning engine for GPU clusters: one POST per module (the CLI's inputs and config), "
                    "plus the run history. Every error is {detail: one line, error: {...}}.",
        lifespan=lifespan,
    )
    api.add_middleware(_Guard, settings_of=settings_of)
    _install_error_handlers(api)

    @api.get("/v1/health", tags=["service"], summary="Service health")
    async def health() -> dict[str, Any]:
        try:
            problem = await asyncio.wait_for(asyncio.to_thread(_store_problem, store_of()), _HEALTH_STORE_WAIT_S)
        except TimeoutError:
            problem = f"did not answer within {_HEALTH_STORE_WAIT_S:g} s"
        if settings_error is not None:
            problem = problem or f"misconfigured: {settings_error.source}"
        return {"status": "ok" if problem is None else "degraded", "qflow_version": __version__,
                "modules": [c.name for c in commands], "run_store": problem or "ok", "runs": runner.counts()}

    for command in commands:
        api.post(f"/v1/{command.name}/plan", tags=["plan"], summary=command.help,
                 responses={413: {"description": "Upload or input over a size limit"},
                            422: {"description": "Invalid input or infeasible instance (the CLI's message)"},
                            429: {"description": "Every run slot and queue place taken"},
                            504: {"description": "Over the request time budget; the run was stopped"}},
                 )(_plan_endpoint(command, store_of, settings_of, lambda: runner))
    for command in (c for c in commands if c.name in SHORT_ROUTES):
        short = _plan_endpoint(command, store_of, settings_of, lambda: runner)
        short.__name__ = f"{command.name}_short_route"
        api.post(f"/v1/{command.name}", tags=["plan"], summary=f"{command.help} (the same as /v1/{command.name}/plan)",
                 responses={413: {"description": "Upload or input over a size limit"},
                            422: {"description": "Invalid input (the CLI's message)"}})(short)
    from qflow.advisor import PRIMARY_METRICS

    for command in (c for c in commands if c.name in PRIMARY_METRICS):
        api.post(f"/v1/{command.name}/advise", tags=["advise"], summary=f"Recommend settings for {command.name}",
                 responses={422: {"description": "Invalid input, goal or budget"},
                            504: {"description": "Over the request time budget; the run was stopped"}},
                 )(_advise_endpoint(command, settings_of, lambda: runner))
    _add_run_routes(api, store_of)
    return api


def _add_run_routes(api: FastAPI, store_of: Callable[[], RunStore]) -> None:
    """``GET /v1/runs``, one run, its artifacts' listing and download."""

    def no_run(run_id: int) -> ApiError:
        return ApiError(404, "run", str(run_id), "no such run", "an id from GET /v1/runs")

    def existing_run(run_id: int) -> tuple[RunStore, Any]:
        """The store and the stored run ``run_id`` (404 when there is none)."""
        store_now = store_of()
        if not -(2**63) <= run_id < 2**63:
            raise no_run(run_id)
        try:
            return store_now, store_now.get(run_id)
        except KeyError:
            raise no_run(run_id) from None

    @api.get("/v1/runs", tags=["runs"], summary="Stored runs, newest first")
    def list_runs(
        module: Annotated[str | None, Query(max_length=64, description="only this module's runs")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ) -> list[dict[str, Any]]:
        return [run.to_dict() for run in store_of().list(module=module, limit=limit, offset=offset)]

    @api.get("/v1/runs/{run_id}", tags=["runs"], summary="One stored run with its plan",
             responses={404: {"description": "No run with this id"}})
    def get_run(run_id: int) -> dict[str, Any]:
        return existing_run(run_id)[1].to_dict()

    @api.get("/v1/runs/{run_id}/artifacts", tags=["runs"], summary="Files a run kept besides its plan",
             responses={404: {"description": "No run with this id"}})
    def list_artifacts(run_id: int) -> list[dict[str, Any]]:
        store_now, run = existing_run(run_id)
        return [artifact.to_dict() for artifact in artifact_store(store_now).list(run.uid)] if run.uid else []

    @api.get("/v1/runs/{run_id}/artifacts/{name}", tags=["runs"], summary="Download one file a run kept",
             response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The file, as an attachment"},
                        404: {"description": "No run with this id, or no artifact of this name in its listing"}})
    def get_artifact(run_id: int, name: str) -> FileResponse:
        store_now, run = existing_run(run_id)
        path = artifact_store(store_now).path(run.uid, name) if run.uid else None
        if path is None:
            raise ApiError(404, f"run {run_id}", name, "no artifact of this name",
                           f"a name from GET /v1/runs/{run_id}/artifacts")
        return FileResponse(path, media_type=media_type(path.name), filename=path.name)


#: The app ``uvicorn qflow.api:app`` runs (``python -m qflow serve`` makes its own, for its ``--host``).
app = create_app()
