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
    ``{"status": "ok", ...}``.

Invalid input or an infeasible instance is a 422 whose ``detail`` is the same
one-line message the CLI prints after ``error:``; a request body over
``QFLOW_MAX_UPLOAD_MB`` (default 200) is a 413. Anything else failing is a 500
and a bug. OpenAPI at ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qflow._version import __version__
from qflow.core.artifacts import ArtifactStore, media_type
from qflow.core.commands import ModuleCommand, available_commands
from qflow.core.errors import InputError, QflowError
from qflow.core.io import parse_json_text
from qflow.core.runs import RunStore, RunStoreError, default_db_path
from qflow.core.uploads import run_on_uploads_keeping_artifacts

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "app", "create_app", "max_upload_bytes"]

#: Default request-size limit, MiB (``QFLOW_MAX_UPLOAD_MB`` overrides).
DEFAULT_MAX_UPLOAD_MB = 200.0
_READ_CHUNK = 1 << 20


def max_upload_bytes() -> int:
    """``QFLOW_MAX_UPLOAD_MB`` (MiB, default 200) in bytes."""
    text = os.environ.get("QFLOW_MAX_UPLOAD_MB", str(DEFAULT_MAX_UPLOAD_MB))
    try:
        megabytes = float(text)
    except ValueError:
        raise InputError("QFLOW_MAX_UPLOAD_MB", "(environment)", "not a number", "a size in MiB, e.g. 200", text) from None
    if not megabytes > 0:
        raise InputError("QFLOW_MAX_UPLOAD_MB", "(environment)", "not positive", "a size in MiB > 0", text)
    return int(megabytes * 2**20)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, detail=f"upload too large: the request body is over {limit} bytes "
                                     f"({limit / 2**20:g} MiB, QFLOW_MAX_UPLOAD_MB)")


class _BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, before the multipart is parsed.

    A declared ``Content-Length`` over the limit is refused at once; a body
    sent without one is counted as it arrives and refused when it passes the
    limit (an :class:`HTTPException` raised from ``receive``, which FastAPI
    lets through its body parsing).
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
            response = JSONResponse({"detail": _too_large(self.limit).detail}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _too_large(self.limit)
            return message

        await self.app(scope, counting_receive, send)


def _qflow_error_response(exc: QflowError) -> JSONResponse:
    """422 with the CLI's message as ``detail`` and the error's fields beside it."""
    return JSONResponse({"detail": exc.message, "error": exc.to_dict()}, status_code=422)


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
        try:
            data = parse_json_text(text, "config", "(form field)")
        except (json.JSONDecodeError, RecursionError) as exc:
            problem = f"invalid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else "JSON nested too deeply"
            raise InputError("config", "(form field)", problem, "a JSON object of config fields, e.g. {\"seed\": 1}",
                             text) from None
    return command.config_cls.from_mapping(data, "config")


def _plan_endpoint(command: ModuleCommand, store_of: Any, limit_of: Any) -> Any:
    """``POST /v1/{name}/plan`` for ``command``, with one documented file parameter per input."""

    async def endpoint(**kwargs: Any) -> JSONResponse:
        limit = limit_of()
        config = _parse_config(command, kwargs.pop("config", None))
        uploads: dict[str, tuple[str, bytes] | None] = {}
        for input_name in (*command.inputs, *command.optional_inputs):
            upload = kwargs.get(input_name)
            uploads[input_name] = None if upload is None else await _read_upload(upload, limit)
        plan, run_id, artifacts = await _run_in_thread(command, uploads, config, store_of())
        headers = {"X-Qflow-Run-Id": str(run_id)}
        if artifacts:
            headers["X-Qflow-Artifacts"] = ",".join(artifacts)
        return JSONResponse(plan.to_dict(), headers=headers)

    parameters = [
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


def artifact_store(store: RunStore) -> ArtifactStore:
    """Where ``store``'s runs keep their files: ``artifacts/`` beside the database (``$QFLOW_HOME/artifacts``)."""
    return ArtifactStore(store.path.parent / "artifacts")


def _run_and_store(command: ModuleCommand, uploads: dict[str, tuple[str, bytes] | None], config: Any,
                   store: RunStore) -> tuple[Any, int, list[str]]:
    """Run ``command``, store the plan, keep the files it wrote under the run id: ``(plan, run id, names)``."""

    def keep(plan: Any, files: list[Any]) -> tuple[Any, int, list[str]]:
        run_id = store.save(plan, origin="api")
        return plan, run_id, artifact_store(store).keep(run_id, files)

    return run_on_uploads_keeping_artifacts(command, uploads, config, keep)


async def _run_in_thread(command: ModuleCommand, uploads: dict[str, tuple[str, bytes] | None], config: Any,
                         store: RunStore) -> tuple[Any, int, list[str]]:
    """The engine is CPU-bound: run it off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_run_and_store, command, uploads, config, store)


def create_app(store: RunStore | None = None, max_upload_mb: float | None = None) -> FastAPI:
    """The API; ``store`` defaults to the run store at ``$QFLOW_HOME/runs.db`` (read per request).

    ``max_upload_mb`` overrides ``QFLOW_MAX_UPLOAD_MB`` (read per request otherwise).
    """
    api = FastAPI(
        title="QuantumFlow API",
        version=__version__,
        description="Planning engine for GPU clusters: one POST per module (the CLI's inputs and config), "
                    "plus the run history. Invalid input is a 422 with the CLI's message; too large a body a 413.",
    )

    def store_of() -> RunStore:
        return store if store is not None else RunStore()

    def limit_of() -> int:
        return int(max_upload_mb * 2**20) if max_upload_mb is not None else max_upload_bytes()

    class _LimitFromSettings(_BodyLimit):
        def __init__(self, app: ASGIApp) -> None:
            super().__init__(app, limit=0)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            self.limit = limit_of()
            await super().__call__(scope, receive, send)

    api.add_middleware(_LimitFromSettings)

    @api.exception_handler(QflowError)
    async def qflow_error(request: Request, exc: QflowError) -> JSONResponse:
        return _qflow_error_response(exc)

    @api.exception_handler(RunStoreError)
    async def store_error(request: Request, exc: RunStoreError) -> JSONResponse:
        # The service's own database, not the caller's input: 503, with the reason.
        return JSONResponse({"detail": exc.message, "error": exc.to_dict()}, status_code=503)

    @api.get("/v1/health", tags=["service"], summary="Service health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "qflow_version": __version__, "modules": [c.name for c in available_commands()],
                "runs_db": str(store.path if store is not None else default_db_path())}

    for command in available_commands():
        api.post(f"/v1/{command.name}/plan", tags=["plan"], summary=command.help,
                 responses={413: {"description": "Upload over the size limit"},
                            422: {"description": "Invalid input or infeasible instance (the CLI's message)"}},
                 )(_plan_endpoint(command, store_of, limit_of))

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
        if not -(2**63) <= run_id < 2**63:
            raise HTTPException(404, detail=f"no run {run_id}")
        try:
            return store_of().get(run_id).to_dict()
        except KeyError:
            raise HTTPException(404, detail=f"no run {run_id}") from None

    def existing_run(run_id: int) -> RunStore:
        """The store, after checking that ``run_id`` is a stored run (404 otherwise)."""
        store_now = store_of()
        if not -(2**63) <= run_id < 2**63:
            raise HTTPException(404, detail=f"no run {run_id}")
        try:
            store_now.get(run_id)
        except KeyError:
            raise HTTPException(404, detail=f"no run {run_id}") from None
        return store_now

    @api.get("/v1/runs/{run_id}/artifacts", tags=["runs"], summary="Files a run kept besides its plan",
             responses={404: {"description": "No run with this id"}})
    def list_artifacts(run_id: int) -> list[dict[str, Any]]:
        store_now = existing_run(run_id)
        return [artifact.to_dict() for artifact in artifact_store(store_now).list(run_id)]

    @api.get("/v1/runs/{run_id}/artifacts/{name}", tags=["runs"], summary="Download one file a run kept",
             response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The file, as an attachment"},
                        404: {"description": "No run with this id, or no artifact of this name in its listing"}})
    def get_artifact(run_id: int, name: str) -> FileResponse:
        store_now = existing_run(run_id)
        path = artifact_store(store_now).path(run_id, name)
        if path is None:
            raise HTTPException(404, detail=f"run {run_id} has no artifact {name!r}; "
                                            f"GET /v1/runs/{run_id}/artifacts lists them")
        return FileResponse(path, media_type=media_type(path.name), filename=path.name)

    return api


#: The app ``python -m qflow serve`` runs (``uvicorn qflow.api:app``).
app = create_app()
