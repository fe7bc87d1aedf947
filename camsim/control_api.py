"""HTTP control API of a running fleet (aiohttp, 127.0.0.1 only): list cameras, set faults, stats.

GET   /healthz                  liveness
GET   /cameras                  [{id, host, ports, faults, up}, ...]
GET   /cameras/{id}             one camera
PATCH /cameras/{id}/faults      partial Faults as JSON; 400 with a message on an unknown field/bad type
POST  /faults                   {"cameras": [ids/globs] | "glob" | "5%", "seed": 0, ...Faults fields}
POST  /reset                    every camera back to no faults
GET   /stats                    requests, sessions, RSS, discovery counters
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from camsim.fleet import Fleet
from camsim.model import CameraSpec, Faults
from camsim.scenario import FAULT_FIELDS, FaultError, patch_faults, select_cameras, validate_fault_fields

log = logging.getLogger(__name__)

FLEET_KEY = web.AppKey("fleet", Fleet)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def faults_json(faults: Faults) -> dict[str, object]:
    return {name: getattr(faults, name) for name in FAULT_FIELDS} | {"rebooting": faults.rebooting()}


def camera_json(fleet: Fleet, spec: CameraSpec) -> dict[str, object]:
    return {
        "id": spec.camera_id,
        "name": spec.name,
        "host": spec.host,
        "ports": {"onvif": spec.onvif_port, "rtsp": spec.rtsp_port, "wsd": fleet.discovery.port},
        "vendor": spec.personality.name,
        "codec": spec.codec,
        "mac": spec.mac,
        "up": fleet.is_up(spec.camera_id),
        "faults": faults_json(spec.faults),
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FaultError("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise FaultError("body must be a JSON object")
    return body


@web.middleware
async def _fault_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FaultError as exc:
        return _error(400, str(exc))


async def healthz(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    return web.json_response({"ok": True, "cameras": len(fleet.specs)})


async def list_cameras(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    return web.json_response([camera_json(fleet, s) for s in fleet.specs])


def _camera(request: web.Request) -> CameraSpec:
    spec = request.app[FLEET_KEY].get(request.match_info["camera_id"])
    if spec is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no camera {request.match_info['camera_id']!r}"}),
            content_type="application/json",
        )
    return spec


async def get_camera(request: web.Request) -> web.Response:
    return web.json_response(camera_json(request.app[FLEET_KEY], _camera(request)))


async def patch_camera_faults(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    spec = _camera(request)
    patch_faults(spec.faults, await _json_object(request))
    fleet.kick()
    log.info("faults of %s changed", spec.camera_id)
    return web.json_response(camera_json(fleet, spec))


async def bulk_faults(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    body = await _json_object(request)
    if "cameras" not in body:
        raise FaultError('cameras: required (a list of ids/globs, a glob, or a percentage like "5%")')
    seed = body.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FaultError(f"seed: expected an integer, got {seed!r}")
    chosen = select_cameras(fleet.specs, body.pop("cameras"), seed=seed)
    fields = validate_fault_fields(body)
    for spec in chosen:  # try on copies first: all cameras change or none
        patch_faults(dataclasses.replace(spec.faults), fields)
    for spec in chosen:
        patch_faults(spec.faults, fields)
    fleet.kick()
    log.info("faults changed on %s cameras", len(chosen))
    return web.json_response({"cameras": [s.camera_id for s in chosen]})


async def reset(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    for spec in fleet.specs:
        spec.faults = Faults()
    fleet.kick()
    return web.json_response({"reset": len(fleet.specs)})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[FLEET_KEY].counters())


def make_app(fleet: Fleet) -> web.Application:
    app = web.Application(middlewares=[_fault_errors])
    app[FLEET_KEY] = fleet
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/cameras", list_cameras)
    app.router.add_get("/cameras/{camera_id}", get_camera)
    app.router.add_patch("/cameras/{camera_id}/faults", patch_camera_faults)
    app.router.add_post("/faults", bulk_faults)
    app.router.add_post("/reset", reset)
    app.router.add_get("/stats", stats)
    return app


class ControlApi:
    """The API's server. Loopback only: it changes what cameras do."""

    def __init__(self, fleet: Fleet, port: int, host: str = "127.0.0.1") -> None:
        self._runner = web.AppRunner(make_app(fleet), access_log=None)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # ephemeral: report the real one
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self._runner.cleanup()
