"""The explorer's HTTP API and page (FastAPI).

Every answer to a bad request is a 4xx JSON object ``{"error": message}``; unexpected
failures are a 500 with the same shape and no traceback. Bulk per-point data (coordinates,
colors, group masks) travel as little-endian binary arrays, one value per point in the order
of the space file: ``Float32`` for numbers, ``Uint8`` for masks.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from deephemnma import __version__
from deephemnma.errors import InputError
from deephemnma.explore.density import point_density
from deephemnma.explore.groupstore import GroupExists, GroupStore, NoSuchGroup
from deephemnma.explore.jobs import JobRunner
from deephemnma.explore.models import models_pdb, modes_for, path_coords, resample_path
from deephemnma.explore.project import ProjectPaths, Space, load_space
from deephemnma.explore.reconstruction import (
    CommandFactory,
    ReconstructRequest,
    freeze_group,
    log_path,
    read_result,
    reconstruct_command,
)
from deephemnma.explore.security import GuardMiddleware, OutsideProject, inside
from deephemnma.groups import Group, folder_name, safe_name

STATIC = Path(__file__).parent / "static"
MAX_VERTICES = 10_000
MAX_PATH_ATOM_FRAMES = 5_000_000  # frames × atoms in one trajectory
_log = logging.getLogger("deephemnma.explore")


# ---- request bodies (unknown fields, NaN and infinities are refused with a 422)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Vertex = tuple[float, float]


class NewGroup(_Body):
    name: str
    polygon: list[Vertex] = Field(min_length=3, max_length=MAX_VERTICES)
    axes: tuple[int, int] = (0, 1)


class GroupEdit(_Body):
    name: str | None = None
    polygon: list[Vertex] | None = Field(None, min_length=3, max_length=MAX_VERTICES)
    axes: tuple[int, int] | None = None


class PathRequest(_Body):
    points: list[Vertex] = Field(min_length=2, max_length=MAX_VERTICES)
    axes: tuple[int, int] = (0, 1)
    frames: int = Field(20, ge=2, le=200)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- state


@dataclass
class Explorer:
    """What the routes share: the project, its space, the group file and the job runner."""

    paths: ProjectPaths
    space: Space
    store: GroupStore
    runner: JobRunner
    command: CommandFactory
    size: int | None = None
    token: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bytes: dict = field(default_factory=dict)
    _key_locks: dict = field(default_factory=dict)
    _modes: object = None
    _table: object = None

    def cached(self, key, make):
        """``make()`` once per key, even when many requests ask at the same time."""
        with self._lock:
            if key in self._bytes:
                return self._bytes[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._bytes:
                self._bytes[key] = make()
            return self._bytes[key]

    def modes(self):
        if self._modes is None:
            if not self.paths.modes.is_file():
                raise ApiError(404, "no modes file in this project (nma/modes.npz or --modes)")
            from deephemnma.nma.modes import load_modes

            self._modes = modes_for(load_modes(self.paths.modes), self.space.mode_numbers)
        return self._modes

    def particle_table(self):
        if self._table is None:
            particles = self.space.particles
            if particles is None or not particles.is_file():
                raise ApiError(400, "the space file names no particle STAR file that exists")
            from deephemnma.io.star import read_particles

            table = read_particles(particles, fill_image_size=False)
            if len(table) != self.space.n_points:
                raise ApiError(
                    400,
                    f"{particles.name} has {len(table)} particles, the space {self.space.n_points}",
                )
            self._table = table
        return self._table

    def check_axes(self, axes) -> tuple[int, int]:
        i, j = (int(a) for a in axes)
        k = self.space.n_axes
        if not (0 <= i < k and 0 <= j < k) or i == j:
            raise ApiError(400, f"axes must be two different PC numbers in 0..{k - 1}")
        return i, j

    def group(self, name: str) -> Group:
        try:
            safe_name(name)
        except InputError as exc:
            raise ApiError(400, str(exc)) from exc
        return self.store.get(name)

    def record(self, group: Group, detail: bool = True) -> dict:
        try:
            indices = self.store.indices(group)
        except InputError as exc:  # e.g. a polygon on a PC this space does not have
            return {
                "name": group.name,
                "source": group.source,
                "count": None,
                "error": str(exc),
                "kind": "invalid",
                "job": {"state": "none"},
            }
        record = {
            "name": group.name,
            "source": group.source,
            "kind": "indices" if group.indices is not None else "polygon",
            "axes": list(group.axes) if group.polygon is not None else None,
            "polygon": None if group.polygon is None else np.asarray(group.polygon).tolist(),
            "count": int(len(indices)),
            "folder": folder_name(group.name),
        }
        if detail:
            amplitudes = (
                self.space.amplitudes[indices].mean(0, dtype=np.float64)
                if len(indices)
                else np.full(len(self.space.mode_numbers), np.nan)
            )
            record["centroid"] = {
                "mode_numbers": self.space.mode_numbers.tolist(),
                "amplitudes": _floats(amplitudes),
                "coords": _floats(self.space.coords[indices].mean(0, dtype=np.float64))
                if len(indices)
                else None,
            }
        record["job"] = self.job_state(group.name)
        return record

    def job_state(self, name: str) -> dict:
        job = self.runner.get(name)
        state = job.status() if job is not None else {"state": "none"}
        result = None
        if state["state"] != "running":
            result = read_result(self.paths.reconstruct, name, self.paths.root)
        if state["state"] == "none" and result is not None:
            state = {"state": "done", "message": "finished earlier"}
        return {**state, "result": result}


def _floats(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def _binary(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def _octets(data: bytes, n: int) -> Response:
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"X-Count": str(n), "Cache-Control": "no-store"},
    )


# ---- the app


def create_app(
    paths: ProjectPaths,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
    command: CommandFactory = reconstruct_command,
    size: int | None = None,
) -> FastAPI:
    """The explorer for the project at ``paths``.

    token: if given, every request must carry it (header ``X-Explore-Token`` or query
        ``token``).
    allowed_hosts: if given, only requests whose ``Host`` is one of these are answered.
    command: builds the reconstruct command line from a :class:`ReconstructRequest`
        (injectable so tests can run a stand-in).
    size: box size passed to ``reconstruct --size`` (None: its default).
    """
    space = load_space(paths.space)
    state = Explorer(
        paths=paths,
        space=space,
        store=GroupStore(paths.groups, space.coords, space.particles),
        runner=JobRunner(),
        command=command,
        size=size,
        token=token,
    )

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.runner.stop_all()

    app = FastAPI(
        title="deephemnma explore",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.explorer = state
    app.add_middleware(GuardMiddleware, token=token, allowed_hosts=allowed_hosts)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.message)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        status = (
            404 if isinstance(exc, NoSuchGroup) else 409 if isinstance(exc, GroupExists) else 400
        )
        return error(status, str(exc))

    @app.exception_handler(OutsideProject)
    async def outside(request: Request, exc: OutsideProject):
        return error(403, f"refused: {exc}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for item in exc.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        _log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")


def _add_routes(app: FastAPI, state: Explorer) -> None:
    space = state.space
    paths = state.paths

    @app.get("/", response_class=HTMLResponse)
    def index():
        html = (STATIC / "index.html").read_text()
        query = f"?token={state.token}" if state.token else ""
        html = html.replace("__TOKEN__", state.token or "").replace("__Q__", query)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    def info():
        colors = [{"id": "density", "label": "density", "kind": "continuous"}]
        if np.isfinite(space.score).any():
            colors.append({"id": "score", "label": "score", "kind": "continuous"})
        colors.append(
            {
                "id": "source",
                "label": "source",
                "kind": "categorical",
                "labels": list(space.source_names),
            }
        )
        for m in space.mode_numbers:
            if space.truth is not None:
                colors.append(
                    {"id": f"truth:{m}", "label": f"truth mode {m}", "kind": "continuous"}
                )
        for m in space.mode_numbers:
            colors.append(
                {"id": f"amplitude:{m}", "label": f"amplitude mode {m}", "kind": "continuous"}
            )
        return {
            "project": paths.root.name,
            "version": __version__,
            "n_points": space.n_points,
            "n_axes": space.n_axes,
            "explained_variance_ratio": _floats(space.explained_variance_ratio),
            "mode_numbers": space.mode_numbers.tolist(),
            "source_names": list(space.source_names),
            "has_truth": space.truth is not None,
            "has_modes": paths.modes.is_file(),
            "has_particles": space.particles is not None and space.particles.is_file(),
            "colors": colors,
        }

    @app.get("/api/pc/{axis}")
    def pc(axis: int):
        if not 0 <= axis < space.n_axes:
            raise ApiError(404, f"no principal axis {axis} (0..{space.n_axes - 1})")
        data = state.cached(("pc", axis), lambda: _binary(space.coords[:, axis]))
        return _octets(data, space.n_points)

    @app.get("/api/color")
    def color(name: str = Query(..., max_length=40), axes: str = Query("0,1", max_length=20)):
        values = _color_values(state, name, axes)
        return _octets(values, space.n_points)

    @app.get("/api/groups")
    def list_groups():
        groups = state.store.read()
        return {"groups": [state.record(g) for g in groups.groups]}

    @app.post("/api/groups", status_code=201)
    def create_group(body: NewGroup):
        axes = state.check_axes(body.axes)
        group = Group(body.name, polygon=np.asarray(body.polygon), axes=axes, source="manual")
        state.store.create(group)
        return state.record(group)

    @app.get("/api/groups/{name}")
    def get_group(name: str):
        return state.record(state.group(name))

    @app.put("/api/groups/{name}")
    def edit_group(name: str, body: GroupEdit):
        state.group(name)
        if body.axes is not None and body.polygon is None:
            raise ApiError(400, "axes can only change together with a polygon")
        axes = state.check_axes(body.axes or (0, 1)) if body.polygon is not None else None
        polygon = None if body.polygon is None else np.asarray(body.polygon)
        new = state.store.update(name, new_name=body.name, polygon=polygon, axes=axes)
        return state.record(new)

    @app.delete("/api/groups/{name}")
    def delete_group(name: str):
        state.group(name)
        state.store.delete(name)
        return {"deleted": name}

    @app.get("/api/groups/{name}/mask")
    def group_mask(name: str):
        indices = state.store.indices(state.group(name))
        mask = np.zeros(space.n_points, dtype=np.uint8)
        mask[indices] = 1
        return _octets(mask.tobytes(), space.n_points)

    @app.get("/api/groups/{name}/model.pdb")
    def centroid_model(name: str):
        group = state.group(name)
        indices = state.store.indices(group)
        if not len(indices):
            raise ApiError(400, f"group '{name}' is empty")
        modes = state.modes()
        amplitudes = space.amplitudes[indices].mean(0, dtype=np.float64)
        text = models_pdb(modes, amplitudes)
        return Response(text, media_type="text/plain", headers={"Cache-Control": "no-store"})

    @app.post("/api/path")
    def path_models(body: PathRequest):
        axes = state.check_axes(body.axes)
        modes = state.modes()
        if body.frames * modes.n_atoms > MAX_PATH_ATOM_FRAMES:
            raise ApiError(
                400,
                f"too many atoms × frames; use ≤ {MAX_PATH_ATOM_FRAMES // modes.n_atoms} frames",
            )
        points = resample_path(np.asarray(body.points), body.frames)
        coords = path_coords(points, axes, space.n_axes)
        amplitudes = space.amplitudes_at(coords)
        return {
            "frames": body.frames,
            "coords": points.tolist(),
            "mode_numbers": space.mode_numbers.tolist(),
            "amplitudes": amplitudes.tolist(),
            "pdb": models_pdb(modes, amplitudes),
        }

    @app.post("/api/groups/{name}/reconstruct")
    def start_reconstruct(name: str):
        group = state.group(name)
        with state._lock:  # check, freeze and start as one step: a double click starts one job
            job = state.runner.get(name)
            if job is not None and job.state == "running":
                return {"started": False, **state.job_state(name)}
            particles = space.particles
            if particles is None or not particles.is_file():
                raise ApiError(400, "the space file names no particle STAR file that exists")
            indices = state.store.indices(group)
            if not len(indices):
                raise ApiError(400, f"group '{name}' is empty")
            groups_file = freeze_group(paths.reconstruct, name, indices, space.n_points)
            request = ReconstructRequest(
                particles=particles,
                out=paths.reconstruct,
                groups=groups_file,
                group=name,
                modes=paths.modes if paths.modes.is_file() else None,
                size=state.size,
            )
            try:
                command = state.command(request)
                _, started = state.runner.start(
                    name, command, log_path(paths.reconstruct, name), cwd=paths.root
                )
            except OSError as exc:
                raise ApiError(500, f"cannot start the reconstruction: {exc}") from exc
        return {"started": started, **state.job_state(name)}

    @app.get("/api/groups/{name}/reconstruct")
    def reconstruct_status(name: str):
        state.group(name)
        return state.job_state(name)

    @app.post("/api/groups/{name}/export")
    def export(name: str):
        from deephemnma.io.star import select, write_particles

        group = state.group(name)
        indices = state.store.indices(group)
        table = state.particle_table()
        out = paths.export / f"{folder_name(name)}.star"
        write_particles(out, select(table, indices))
        return {"path": out.relative_to(paths.root).as_posix(), "n_particles": int(len(indices))}

    @app.get("/api/file")
    def project_file(path: str = Query(..., max_length=1000)):
        target = inside(paths.root, path)
        if not target.is_file():
            raise ApiError(404, f"no such file in the project: {path}")
        return FileResponse(target, headers={"Cache-Control": "no-store"})


def _color_values(state: Explorer, name: str, axes_text: str) -> bytes:
    space = state.space
    if name == "density":
        try:
            axes = state.check_axes([int(a) for a in axes_text.split(",")])
        except ValueError as exc:  # not integers, or not two of them
            raise ApiError(400, "axes must be two integers like 0,1") from exc
        return state.cached(
            ("density", axes), lambda: _binary(point_density(space.coords[:, list(axes)]))
        )
    if name == "score":
        return state.cached("score", lambda: _binary(space.score.astype(np.float32)))
    if name == "source":
        return state.cached("source", lambda: _binary(space.source.astype(np.float32)))
    kind, _, mode = name.partition(":")
    if kind in ("truth", "amplitude") and mode.isdigit():
        numbers = space.mode_numbers.tolist()
        if int(mode) not in numbers:
            raise ApiError(404, f"no mode {mode} in this space (modes {numbers})")
        column = numbers.index(int(mode))
        if kind == "truth":
            if space.truth is None:
                raise ApiError(404, "this space has no ground truth")
            return state.cached(name, lambda: _binary(space.truth[:, column]))
        return state.cached(name, lambda: _binary(space.amplitudes[:, column]))
    raise ApiError(404, f"unknown color '{name}' (see /api/info)")
