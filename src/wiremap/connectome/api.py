"""HTTP API of a connectome version (FastAPI): the Python queries as JSON.

``create_app(workspace)`` serves, under ``/api/v1``::

    GET  /info                               version, counts, properties
    GET  /versions                           all builds of the workspace
    GET  /neurons?type=&regex=&ei=&kind=&min_pre=&min_post=&bodyId=&limit=&offset=
    GET  /neurons/{id}                       one neuron (404 if absent)
    GET  /neurons/{id}/upstream?min_weight=&limit=
    GET  /neurons/{id}/downstream?min_weight=&limit=
    GET  /synapses?pre=&post=&pre_type=&post_type=&ei=&post_compartment=&min_confidence=
                   &limit=&offset=
    GET  /adjacencies?source_type=&target_type=&sources=&targets=&min_weight=&limit=&offset=
    GET  /path?source=&target=&min_weight=
    PUT  /neurons/{id}/properties/{key}      {"value": ...}, only with the write token

Lists answer ``{"data": [...rows...], "limit", "offset", "next_offset"}``
(``next_offset`` is null on the last page); ``limit`` is capped at
``max_limit``.  Without ``token`` the database is opened read-only and PUT
answers 403.  Values travel as SQL parameters only; malformed input (wrong
types, huge ids, SQL fragments in names) answers 4xx with a message.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from wiremap.connectome.criteria import NeuronCriteria
from wiremap.connectome.queries import (
    Connectome,
    fetch_adjacencies,
    fetch_downstream,
    fetch_neurons,
    fetch_shortest_path,
    fetch_synapses,
    fetch_upstream,
    fetch_versions,
    set_property,
)
from wiremap.connectome.schema import MAX_ID
from wiremap.errors import WiremapError
from wiremap.workspace import Workspace

DEFAULT_LIMIT = 100
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="neuron id (1..2**64-1)")]
Limit = Annotated[int | None, Query(ge=1, le=2**31, description="rows per page (default 100, at most max_limit)")]
Offset = Annotated[int, Query(ge=0, le=2**62)]
IdList = Annotated[list[int] | None, Query(description="neuron ids (repeat the parameter)")]


class PropertyValue(BaseModel):
    """Body of a property edit."""

    value: bool | int | float | str


def rows_json(df: pd.DataFrame) -> str:
    """Rows as a JSON array of objects, by pandas' C writer (NaN -> null, numpy -> JSON)."""
    return df.to_json(orient="records", double_precision=15) if len(df) else "[]"


def respond(data: pd.DataFrame, *, single: bool = False, **extra: Any) -> Response:
    """``{"data": [rows], **extra}`` (or the first row alone if ``single``) as a JSON response."""
    if single:
        body = rows_json(data.iloc[:1])[1:-1]
    else:
        body = (
            '{"data":' + rows_json(data) + "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in extra.items()) + "}"
        )
    return Response(body, media_type="application/json")


def create_app(
    workspace: str | Workspace,
    *,
    version: int | None = None,
    token: str | None = None,
    max_limit: int = 10_000,
) -> FastAPI:
    """The API app of one version of ``workspace``; writable only when ``token`` is given."""
    client = Connectome(workspace, version=version, read_only=token is None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()

    app = FastAPI(title="wiremap connectome", version=f"v{client.version}", lifespan=lifespan)
    app.state.client = client

    @app.exception_handler(WiremapError)
    async def _user_error(request: Request, exc: WiremapError) -> Response:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    def page(fetch: Any, limit: int | None, offset: int, **kwargs: Any) -> Response:
        limit = _check_limit(limit)
        df = fetch(limit=limit + 1, offset=offset, client=client, **kwargs)
        more = len(df) > limit
        return respond(df.iloc[:limit], limit=limit, offset=offset, next_offset=offset + limit if more else None)

    def criteria(**kwargs: Any) -> NeuronCriteria | None:
        given = {k: v for k, v in kwargs.items() if v not in (None, [], False)}
        return NeuronCriteria(**given) if given else None

    def _check_limit(limit: int | None) -> int:
        if limit is None:
            return min(DEFAULT_LIMIT, max_limit)
        if limit > max_limit:
            raise HTTPException(422, f"limit {limit} exceeds this server's max_limit {max_limit}; page with offset")
        return limit

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise HTTPException(403, "this server is read-only (start it with a token to allow edits)")
        expected = f"Bearer {token}"
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong token (send 'Authorization: Bearer <token>')")

    @app.get("/api/v1/info")
    def info() -> Response:
        counts = {
            t: int(client.sql(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in ("neurons", "synapses", "edges")
        }
        return JSONResponse(
            {
                "version": client.version,
                "workspace": client.ws.url,
                "read_only": client.read_only,
                "counts": counts,
                "properties": client.properties,
                "max_limit": max_limit,
            }
        )

    @app.get("/api/v1/versions")
    def versions() -> Response:
        return respond(fetch_versions(client=client))

    @app.get("/api/v1/neurons")
    def neurons(
        bodyId: IdList = None,
        type: Annotated[str | None, Query(max_length=200)] = None,
        regex: bool = False,
        ei: Annotated[str | None, Query(pattern="^[EI]$")] = None,
        kind: Annotated[str | None, Query(pattern="^(neuron|glia)$")] = None,
        min_pre: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        min_post: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Response:
        _check_ids(bodyId)
        crit = criteria(
            bodyId=bodyId,
            type=type,
            regex=regex,
            ei=ei,
            kind=kind,
            min_pre=min_pre,
            min_post=min_post,
        )
        return page(fetch_neurons, limit, offset, criteria=crit)

    @app.get("/api/v1/neurons/{body_id}")
    def neuron(body_id: Id) -> Response:
        df = fetch_neurons(body_id, client=client)
        if df.empty:
            raise HTTPException(404, f"no neuron {body_id} in version {client.version}")
        return respond(df, single=True)

    @app.get("/api/v1/neurons/{body_id}/upstream")
    def upstream(body_id: Id, min_weight: Annotated[int, Query(ge=1, le=2**62)] = 1, limit: Limit = None) -> Response:
        limit = _check_limit(limit)
        return respond(fetch_upstream(body_id, min_weight=min_weight, limit=limit, client=client))

    @app.get("/api/v1/neurons/{body_id}/downstream")
    def downstream(body_id: Id, min_weight: Annotated[int, Query(ge=1, le=2**62)] = 1, limit: Limit = None) -> Response:
        limit = _check_limit(limit)
        return respond(fetch_downstream(body_id, min_weight=min_weight, limit=limit, client=client))

    @app.get("/api/v1/synapses")
    def synapses(
        pre: IdList = None,
        post: IdList = None,
        pre_type: Annotated[str | None, Query(max_length=200)] = None,
        post_type: Annotated[str | None, Query(max_length=200)] = None,
        ei: Annotated[str | None, Query(pattern="^[EI]$")] = None,
        post_compartment: Annotated[str | None, Query(pattern="^(axon|dendrite|spine|soma)$")] = None,
        min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Response:
        _check_ids(pre)
        _check_ids(post)
        return page(
            fetch_synapses,
            limit,
            offset,
            sources=criteria(bodyId=pre, type=pre_type),
            targets=criteria(bodyId=post, type=post_type),
            ei=ei,
            post_compartment=post_compartment,
            min_confidence=min_confidence,
        )

    @app.get("/api/v1/adjacencies")
    def adjacencies(
        sources: IdList = None,
        targets: IdList = None,
        source_type: Annotated[str | None, Query(max_length=200)] = None,
        target_type: Annotated[str | None, Query(max_length=200)] = None,
        min_weight: Annotated[int, Query(ge=1, le=2**62)] = 1,
        limit: Limit = None,
        offset: Offset = 0,
    ) -> Response:
        _check_ids(sources)
        _check_ids(targets)
        return page(
            fetch_adjacencies,
            limit,
            offset,
            sources=criteria(bodyId=sources, type=source_type),
            targets=criteria(bodyId=targets, type=target_type),
            min_weight=min_weight,
        )

    @app.get("/api/v1/path")
    def path(
        source: Annotated[int, Query(ge=1, le=MAX_ID)],
        target: Annotated[int, Query(ge=1, le=MAX_ID)],
        min_weight: Annotated[int, Query(ge=1, le=2**62)] = 1,
    ) -> Response:
        df = fetch_shortest_path(source, target, min_weight=min_weight, client=client)
        return respond(df, found=not df.empty)

    @app.put("/api/v1/neurons/{body_id}/properties/{key}", dependencies=[Depends(require_token)])
    def put_property(
        body_id: Id,
        key: Annotated[str, Path(pattern="^[a-z][a-z0-9_]{0,39}$", description="property name")],
        body: PropertyValue,
    ) -> Response:
        set_property(body_id, key, body.value, client=client)
        return respond(fetch_neurons(body_id, client=client), single=True)

    return app


def _check_ids(ids: list[int] | None) -> None:
    """Id lists arrive as plain ints; out-of-range ids are the client's mistake (422)."""
    for value in ids or ():
        if not 1 <= value <= MAX_ID:
            raise HTTPException(422, f"id {value} is out of range (ids are 1..2**64-1)")
    if ids is not None and len(ids) > 1000:
        raise HTTPException(422, f"at most 1000 ids per request, got {len(ids)}")


def serve(
    workspace: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    version: int | None = None,
    token: str | None = None,
    max_limit: int = 10_000,
) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    app = create_app(workspace, version=version, token=token, max_limit=max_limit)
    uvicorn.run(app, host=host, port=port, log_level="warning")
