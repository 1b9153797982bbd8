"""Particle groups: the file that ``analyze`` writes, the explorer edits and ``reconstruct`` reads.

A group file is JSON (``groups.json``)::

    {"format": "deephemnma-groups", "version": 1,
     "n_particles": 20000,                # rows of the particle table the indices refer to
     "particles": "../predict/particles.star",   # optional, relative to the group file
     "groups": [
        {"name": "pc1_bin1", "indices": [0, 5, 17], "source": "bins"},
        {"name": "lasso A", "polygon": [[x, y], ...], "axes": [0, 1], "source": "manual"}
     ]}

A group is either explicit row indices (0-based rows of the particle table) or a polygon in the
plane of two principal axes (0-based PC numbers); a polygon resolves to the particles whose
coordinates fall inside it, so it survives a re-run that adds particles. Plain text files with
one 0-based row index per line are also read (one group named after the file).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_write_text

FORMAT = "deephemnma-groups"
VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")


@dataclass(frozen=True)
class Group:
    """One named group: explicit row indices or a polygon in a PC plane."""

    name: str
    indices: np.ndarray | None = None
    polygon: np.ndarray | None = None  # (V, 2) vertices in the PC plane
    axes: tuple[int, int] = (0, 1)
    source: str = "manual"
    extra: dict = field(default_factory=dict)

    def resolve(self, coords: np.ndarray | None = None) -> np.ndarray:
        """Sorted 0-based row indices of the group's particles.

        coords: (N, K) coordinates in the reduced space; needed for polygon groups.
        """
        if self.indices is not None:
            return np.unique(np.asarray(self.indices, dtype=np.int64))
        if coords is None:
            raise InputError(
                f"group '{self.name}' is a polygon; the reduced-space coordinates are needed",
                field="polygon",
            )
        coords = np.asarray(coords)
        if max(self.axes) >= coords.shape[1]:
            raise InputError(
                f"group '{self.name}' uses PC axes {self.axes}",
                field="axes",
                expected=f"axes < {coords.shape[1]}",
                found=str(list(self.axes)),
            )
        inside = points_in_polygon(coords[:, list(self.axes)], self.polygon)
        return np.flatnonzero(inside)


def safe_name(name: str) -> str:
    """A group name usable as a folder name (letters, digits, space, ``_.+-``; ≤ 64 chars)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            "invalid group name",
            field="name",
            expected="1-64 of letters, digits, space, _ . + - (first a letter or digit)",
            found=repr(name),
        )
    return name


def folder_name(name: str) -> str:
    """The folder a group's outputs go to: its name with spaces as underscores."""
    return safe_name(name).replace(" ", "_")


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of the (N, 2) points lie inside the closed (V, 2) polygon.

    Vectorized over points (loop over the V edges), so a million points and a few hundred
    vertices take well under a second.
    """
    points = np.asarray(points, dtype=np.float64)
    polygon = np.asarray(polygon, dtype=np.float64)
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), dtype=bool)
    x0, y0 = polygon[-1]
    for x1, y1 in polygon:
        crosses = (y1 > y) != (y0 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (y - y1) * (x0 - x1) / (y0 - y1)
        inside ^= crosses & (x < x_at)
        x0, y0 = x1, y1
    return inside


@dataclass(frozen=True)
class GroupSet:
    """Groups of one particle table."""

    groups: tuple[Group, ...]
    n_particles: int | None = None
    particles: str | None = None  # particle STAR path, relative to the group file

    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def get(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise InputError(
            "no such group", field="name", expected=" | ".join(self.names()), found=name
        )

    def resolve(self, coords: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each group's sorted row indices, checked against ``n_particles``."""
        resolved = {}
        for group in self.groups:
            indices = group.resolve(coords)
            limit = self.n_particles if self.n_particles is not None else None
            if coords is not None:
                limit = len(coords) if limit is None else min(limit, len(coords))
            if len(indices) and (indices[0] < 0 or (limit is not None and indices[-1] >= limit)):
                raise InputError(
                    f"group '{group.name}' has row indices out of range",
                    field="indices",
                    expected=f"0 ≤ index < {limit}",
                    found=f"{indices[0]}..{indices[-1]}",
                )
            resolved[group.name] = indices
        return resolved

    def with_group(self, group: Group) -> GroupSet:
        """A copy with ``group`` added, or replacing the group of the same name."""
        safe_name(group.name)
        kept = tuple(g for g in self.groups if g.name != group.name)
        return GroupSet(kept + (group,), self.n_particles, self.particles)

    def without(self, name: str) -> GroupSet:
        self.get(name)
        kept = tuple(g for g in self.groups if g.name != name)
        return GroupSet(kept, self.n_particles, self.particles)


def check_table(groups: GroupSet, n_particles: int, path=None) -> None:
    """InputError when the group file was written for a table of another size."""
    if groups.n_particles is not None and groups.n_particles != n_particles:
        raise InputError(
            "the group file refers to a table with another number of particles",
            path=path,
            field="n_particles",
            expected=f"{n_particles} (rows of the particle table)",
            found=str(groups.n_particles),
        )


def resolve_group_file(
    path: str | os.PathLike,
    n_particles: int,
    names: Sequence[str] = (),
    space_file: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Row indices, in a table of ``n_particles`` rows, of the groups of a group file (or
    only ``names``). Polygon groups need the reduced-space coordinates: ``space_file``, else
    ``space.npz`` next to the group file."""
    groups = read_groups(path)
    check_table(groups, n_particles, path)
    chosen = tuple(groups.get(n) for n in names) if names else groups.groups
    coords = None
    polygons = [g.name for g in chosen if g.indices is None]
    if polygons:
        from deephemnma.analysis.space import load_coords

        space = Path(space_file) if space_file else Path(path).parent / "space.npz"
        if not space.is_file():
            raise InputError(
                f"group '{polygons[0]}' is a polygon in the reduced space; its coordinates are "
                "needed (--space FILE, or space.npz next to the group file)",
                path=space,
                expected="an .npz file with 'coords' (N, K)",
            )
        coords = load_coords(space, n_particles)
    return GroupSet(chosen, n_particles, groups.particles).resolve(coords)


def _group_record(group: Group) -> dict:
    record = {"name": group.name, "source": group.source, **group.extra}
    if group.indices is not None:
        record["indices"] = [int(i) for i in np.asarray(group.indices).ravel()]
    else:
        record["polygon"] = [[float(x), float(y)] for x, y in np.asarray(group.polygon)]
        record["axes"] = [int(a) for a in group.axes]
    return record


def groups_to_json(groups: GroupSet) -> str:
    record = {"format": FORMAT, "version": VERSION}
    if groups.n_particles is not None:
        record["n_particles"] = int(groups.n_particles)
    if groups.particles is not None:
        record["particles"] = groups.particles
    record["groups"] = [_group_record(g) for g in groups.groups]
    return json.dumps(record, indent=1)


def write_groups(path: str | os.PathLike, groups: GroupSet) -> Path:
    """Write a group file atomically (names are checked; duplicates refused)."""
    names = [safe_name(g.name) for g in groups.groups]
    if len(set(names)) != len(names):
        raise InputError("duplicate group names", path=path, found=", ".join(names))
    return atomic_write_text(path, groups_to_json(groups))


def _parse_group(entry, path: Path, number: int) -> Group:
    where = f"groups[{number}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise InputError("a group must be an object with a name", path=path, field=where)
    name = safe_name(entry["name"])
    known = {"name", "indices", "polygon", "axes", "source"}
    extra = {k: v for k, v in entry.items() if k not in known}
    source = str(entry.get("source", "manual"))
    if ("indices" in entry) == ("polygon" in entry):
        raise InputError(
            f"group '{name}' needs exactly one of indices or polygon", path=path, field=where
        )
    if "indices" in entry:
        try:
            indices = np.asarray(entry["indices"], dtype=np.int64).ravel()
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"group '{name}': indices must be integers", path=path, field=f"{where}.indices"
            ) from exc
        return Group(name, indices=indices, source=source, extra=extra)
    try:
        polygon = np.asarray(entry["polygon"], dtype=np.float64)
        axes = tuple(int(a) for a in entry.get("axes", (0, 1)))
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"group '{name}': polygon must be [[x, y], ...] numbers",
            path=path,
            field=f"{where}.polygon",
        ) from exc
    if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
        raise InputError(
            f"group '{name}': polygon needs at least 3 [x, y] vertices",
            path=path,
            field=f"{where}.polygon",
            found=f"shape {polygon.shape}",
        )
    if len(axes) != 2 or axes[0] == axes[1] or min(axes) < 0:
        raise InputError(
            f"group '{name}': axes must be two different PC numbers ≥ 0",
            path=path,
            field=f"{where}.axes",
            found=str(list(axes)),
        )
    return Group(name, polygon=polygon, axes=axes, source=source, extra=extra)


def parse_groups(text: str, path: str | os.PathLike = "<groups>") -> GroupSet:
    """Parse group-file JSON text (see the module docstring)."""
    path = Path(path)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at line {exc.lineno}", path=path) from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(
            "not a deephemnma group file",
            path=path,
            field="format",
            expected=FORMAT,
            found=repr(record.get("format") if isinstance(record, dict) else type(record)),
        )
    if not isinstance(record.get("groups"), list):
        raise InputError("missing the list of groups", path=path, field="groups")
    groups = tuple(_parse_group(e, path, i) for i, e in enumerate(record["groups"]))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise InputError("duplicate group names", path=path, found=", ".join(names))
    n = record.get("n_particles")
    return GroupSet(groups, None if n is None else int(n), record.get("particles"))


def read_groups(path: str | os.PathLike) -> GroupSet:
    """Read a group file: JSON as above, or text with one 0-based row index per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("group file not found", path=path)
    text = path.read_text()
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return parse_groups(text, path)
    try:
        indices = np.array([int(t) for t in text.split()], dtype=np.int64)
    except ValueError as exc:
        raise InputError(
            "a text group file holds one 0-based row index per line",
            path=path,
            found=str(exc),
        ) from exc
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", path.stem)[:64] or "group"
    return GroupSet((Group(name, indices=indices, source="file"),))


def from_labels(
    labels: np.ndarray, prefix: str, source: str, names: Sequence[str] | None = None
) -> GroupSet:
    """Groups from per-particle integer labels (−1 = in no group), e.g. a clustering."""
    labels = np.asarray(labels)
    values = [v for v in np.unique(labels) if v >= 0]
    if names is None:
        names = [f"{prefix}{int(v) + 1}" for v in values]
    groups = tuple(
        Group(name, indices=np.flatnonzero(labels == v), source=source)
        for name, v in zip(names, values, strict=True)
    )
    return GroupSet(groups, n_particles=len(labels))
