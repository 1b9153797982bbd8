"""The group file, edited from the page: create, rename, replace, delete, resolve.

The file on disk (:mod:`deephemnma.groups` format) is the only state: every edit reads it,
changes one group and writes it back atomically under a lock, so ``analyze`` and
``reconstruct`` read exactly what the page shows. Resolving a polygon over a million points
is cached by the group's content.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.groups import (
    Group,
    GroupSet,
    points_in_polygon,
    read_groups,
    safe_name,
    write_groups,
)


class GroupExists(InputError):
    """A group of that name exists already."""


class NoSuchGroup(InputError):
    """No group of that name."""


def resolve_fast(group: Group, coords: np.ndarray) -> np.ndarray:
    """``group.resolve(coords)``, testing only the points in the polygon's bounding box.

    Identical result (a point outside the box is outside the polygon), much faster for a
    small lasso in a million points.
    """
    if group.polygon is None:
        return group.resolve(coords)
    if max(group.axes) >= coords.shape[1]:
        return group.resolve(coords)  # raises the usual error
    xy = coords[:, list(group.axes)]
    lo, hi = group.polygon.min(0), group.polygon.max(0)
    box = (xy[:, 0] >= lo[0]) & (xy[:, 0] <= hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] <= hi[1])
    candidates = np.flatnonzero(box)
    inside = points_in_polygon(xy[candidates], group.polygon)
    return candidates[inside]


def _content_key(group: Group) -> str:
    digest = hashlib.sha1()
    if group.indices is not None:
        digest.update(b"i" + np.ascontiguousarray(group.indices, dtype=np.int64).tobytes())
    else:
        digest.update(b"p" + np.ascontiguousarray(group.polygon, dtype=np.float64).tobytes())
        digest.update(repr(tuple(group.axes)).encode())
    return digest.hexdigest()


class GroupStore:
    """Read-modify-write access to one group file for a space of ``coords`` (N, K)."""

    def __init__(
        self, path: Path, coords: np.ndarray, particles: Path | None, cache_size: int = 64
    ):
        self.path = Path(path)
        self.coords = coords
        self.particles = particles
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    # ---- reading

    def read(self) -> GroupSet:
        if not self.path.exists():
            return GroupSet((), n_particles=len(self.coords), particles=self._particles_field())
        return read_groups(self.path)

    def _particles_field(self) -> str | None:
        if self.particles is None:
            return None
        return Path(os.path.relpath(self.particles, self.path.parent)).as_posix()

    def get(self, name: str) -> Group:
        groups = self.read()
        if name not in groups.names():
            raise NoSuchGroup("no such group", field="name", found=name)
        return groups.get(name)

    def indices(self, group: Group) -> np.ndarray:
        """Sorted row indices of ``group`` (cached by content), checked against N."""
        key = _content_key(group)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        indices = resolve_fast(group, self.coords)
        if len(indices) and (indices[0] < 0 or indices[-1] >= len(self.coords)):
            raise InputError(
                f"group '{group.name}' has row indices out of range",
                field="indices",
                expected=f"0 ≤ index < {len(self.coords)}",
                found=f"{indices[0]}..{indices[-1]}",
            )
        with self._lock:
            self._cache[key] = indices
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return indices

    # ---- editing (each one read → change → atomic write, under the lock)

    def _write(self, groups: GroupSet) -> None:
        if groups.n_particles is None:
            groups = replace(groups, n_particles=len(self.coords))
        write_groups(self.path, groups)

    def create(self, group: Group) -> Group:
        safe_name(group.name)
        with self._lock:
            groups = self.read()
            if group.name in groups.names():
                raise GroupExists("a group of that name exists", field="name", found=group.name)
            self._write(groups.with_group(group))
        return group

    def update(
        self,
        name: str,
        new_name: str | None = None,
        polygon: np.ndarray | None = None,
        axes: tuple[int, int] | None = None,
    ) -> Group:
        """Rename the group and/or replace its members by a polygon; order is kept."""
        with self._lock:
            groups = self.read()
            if name not in groups.names():
                raise NoSuchGroup("no such group", field="name", found=name)
            old = groups.get(name)
            new = old
            if new_name is not None and new_name != name:
                safe_name(new_name)
                if new_name in groups.names():
                    raise GroupExists("a group of that name exists", field="name", found=new_name)
                new = replace(new, name=new_name)
            if polygon is not None:
                new = replace(
                    new, indices=None, polygon=polygon, axes=axes or (0, 1), source="manual"
                )
            kept = tuple(new if g.name == name else g for g in groups.groups)
            self._write(GroupSet(kept, groups.n_particles, groups.particles))
        return new

    def delete(self, name: str) -> None:
        with self._lock:
            groups = self.read()
            if name not in groups.names():
                raise NoSuchGroup("no such group", field="name", found=name)
            self._write(groups.without(name))
