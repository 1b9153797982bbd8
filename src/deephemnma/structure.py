"""Atomic (or pseudoatomic) models as plain typed arrays.

A :class:`Structure` is what every numerical step needs from a model file: coordinates in Å
and the identities that let us write the model back, pick atoms, and look up form factors.
Reading and writing files lives in :mod:`deephemnma.io.pdb`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Structure:
    """N atoms. Arrays are numpy, one entry per atom, in file order.

    coords_A: (N, 3) float64, Å, model frame.
    element: (N,) upper-case element symbols ("C", "N", "O", "S", "P", ...).
    atom_name, residue_name, chain_id: (N,) strings; residue_seq: (N,) int.
    b_factor_A2: (N,) float64 (0 when unknown).
    """

    coords_A: np.ndarray
    element: np.ndarray
    atom_name: np.ndarray
    residue_name: np.ndarray
    residue_seq: np.ndarray
    chain_id: np.ndarray
    b_factor_A2: np.ndarray
    metadata: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.coords_A.shape[0])

    def select(self, mask: np.ndarray) -> Structure:
        """A new structure with the atoms where ``mask`` is true (order kept)."""
        mask = np.asarray(mask)
        return replace(
            self,
            coords_A=self.coords_A[mask],
            element=self.element[mask],
            atom_name=self.atom_name[mask],
            residue_name=self.residue_name[mask],
            residue_seq=self.residue_seq[mask],
            chain_id=self.chain_id[mask],
            b_factor_A2=self.b_factor_A2[mask],
        )

    def with_coords(self, coords_A: np.ndarray) -> Structure:
        return replace(self, coords_A=np.asarray(coords_A, dtype=np.float64))

    def center_of_mass_A(self) -> np.ndarray:
        """Mass-weighted center (Å); unknown elements count as carbon."""
        from deephemnma.formfactors import atomic_mass

        mass = atomic_mass(self.element)
        return (self.coords_A * mass[:, None]).sum(0) / mass.sum()

    def centered(self) -> Structure:
        """The same model with its center of mass at the origin (the box center)."""
        return self.with_coords(self.coords_A - self.center_of_mass_A())

    def residue_keys(self) -> np.ndarray:
        """(N,) int label of each atom's residue, consecutive residues numbered 0, 1, …"""
        key = np.char.add(np.char.add(self.chain_id.astype(str), ":"), self.residue_seq.astype(str))
        change = np.ones(self.n_atoms, dtype=bool)
        change[1:] = key[1:] != key[:-1]
        return np.cumsum(change) - 1
