"""``/v1/projects/{project_id}/pitr`` [ours]: a project's point-in-time recovery, read and
turned on or off.

``GET`` answers ``{"pitr": …}`` (``backups:read``). ``PUT {"enabled": …, "method": …}``
(``backups:write``) answers 202 ``{"pitr": …, "job": …}`` when turning PITR on started
its first base backup, else 200 ``{"pitr": …}``. Hosted CapyDB has no such endpoint (PITR
is always on there). The status reads the clock (the lag, whether a streamer's lease is
alive), so its answer is ``Cache-Control: no-store`` and the read cache never keeps it.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pulumi_capy.api.models import PutPitr
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)

NO_STORE = {"Cache-Control": "no-store"}


@router.get("/v1/projects/{project_id}/pitr", response_model=env.PitrEnvelope)
async def get_pitr(caller: Caller, engine: AppEngine, project_id: str) -> Response:
    require_project_access(caller, project_id, "backups:read")
    status = engine.get_pitr(project_id)
    return Response(
        env.PitrEnvelope(pitr=status).model_dump_json(),
        media_type="application/json",
        headers=NO_STORE,
    )


@router.put(
    "/v1/projects/{project_id}/pitr",
    response_model=env.PitrEnvelope,
    responses={
        202: {
            "model": env.PitrJobEnvelope,
            "description": "PITR turned on; its first base backup runs as this job",
        }
    },
)
def put_pitr(caller: Caller, engine: AppEngine, project_id: str, body: PutPitr) -> Response:
    require_project_access(caller, project_id, "backups:write")
    change = engine.put_pitr(project_id, body)
    if change.job is not None:
        started = env.PitrJobEnvelope(pitr=change.pitr, job=change.job)
        return Response(started.model_dump_json(), status_code=202, media_type="application/json")
    return Response(
        env.PitrEnvelope(pitr=change.pitr).model_dump_json(), media_type="application/json"
    )
