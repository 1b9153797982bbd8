"""Atomic models: PDB and mmCIF (also gzipped) through gemmi, to and from :class:`Structure`.

Selections (``selection=``), applied to one model after alternate locations are resolved:

- ``"all"``: every atom in the file, hydrogens and waters included.
- ``"heavy"`` (default): no hydrogen or deuterium, **no water**; ligands and ions are kept.
  Waters are dropped because crystallographic/cryo-EM waters are not part of the elastic
  body whose normal modes we compute, and they move freely between conformations.
- ``"ca"``: the CA (carbon) of every amino-acid residue.
- ``"ca+p"``: the CA of every amino-acid residue and the P of every nucleotide residue
  (the paper's coarse-graining of the ribosome).
- ``"backbone"``: amino acids N, CA, C, O; nucleotides P, OP1/O1P, OP2/O2P, O5', C5', C4', C3',
  O3'.

A residue counts as an amino acid when gemmi's table of standard and modified residues says so,
or when it has atoms N, CA and C (an unlisted modified amino acid). It counts as a nucleotide
when gemmi's table says so or when it has atoms P, C1' and C4' (a phosphorylated sugar; this
includes free nucleotides such as AMP, whose P is counted: PDB 6ZU5 gives 10,308 CA + 3,910
polymer P + 1 AMP P = 14,219). Residues without an atom named exactly ``P`` (e.g. ATP, whose
phosphates are PA, PB, PG; the 5' end of most RNA chains) contribute no P.

Alternate locations: the first conformer of every atom is kept (gemmi
``remove_alternative_conformations``). Elements: gemmi's element column, or gemmi's inference
from the atom name when the column is blank; if that still fails, the first letter of the atom
name when it is a valid element, else ``"X"`` (unknown). Insertion codes are not kept.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_write_bytes
from deephemnma.structure import Structure

SELECTIONS = ("all", "heavy", "ca", "ca+p", "backbone")

_PROTEIN_BACKBONE = frozenset({"N", "CA", "C", "O"})
_NUCLEIC_BACKBONE = frozenset({"P", "OP1", "OP2", "O1P", "O2P", "O5'", "C5'", "C4'", "C3'", "O3'"})
_PDB_SUFFIXES = (".pdb", ".ent", ".pdb1")
_CIF_SUFFIXES = (".cif", ".mmcif")


def package_data_path(name: str) -> Path:
    """Path of a file shipped in ``deephemnma/data`` (e.g. ``"4ake_A.pdb"``)."""
    path = Path(str(resources.files("deephemnma").joinpath("data", name)))
    if not path.is_file():
        available = sorted(p.name for p in path.parent.iterdir() if p.is_file())
        raise InputError(
            "no such file in the package data", path=path, expected=", ".join(available), found=name
        )
    return path


# --------------------------------------------------------------------------------------------
# Reading


def read_structure(
    path: str | os.PathLike,
    selection: str = "heavy",
    chains: Sequence[str] | None = None,
    model_index: int = 0,
    known_elements: Iterable[str] | None = None,
) -> Structure:
    """Read one model of a PDB/mmCIF file (optionally ``.gz``) as a :class:`Structure`.

    path: PDB (.pdb, .ent) or mmCIF (.cif); gemmi detects the format, gzip included.
    selection: one of :data:`SELECTIONS` (see the module docstring).
    chains: chain ids to keep (author chain names, as PDB files and viewers show them);
        ``None`` keeps all chains.
    model_index: 0-based model of a multi-model file.
    known_elements: if given, every selected atom's element (upper case) must be in this set,
        e.g. the elements that have form factors; otherwise :class:`InputError`.

    Returns coordinates in Å (float64, (N, 3)) in file order. ``metadata`` records the source
    path, selection, chains, model index and the number of models in the file.
    """
    path = Path(path)
    if selection not in SELECTIONS:
        raise InputError(
            "unknown atom selection", path=path, expected=" | ".join(SELECTIONS), found=selection
        )
    st = _read_gemmi(path)
    if not 0 <= model_index < len(st):
        raise InputError(
            "model index out of range",
            path=path,
            expected=f"0 ≤ model_index < {len(st)} (0-based)",
            found=str(model_index),
        )
    st.remove_alternative_conformations()
    atoms = _atom_table(st[model_index])
    mask = _selection_mask(atoms, selection)
    if chains is not None:
        chains = [str(c) for c in chains]
        present = list(dict.fromkeys(atoms["chain_id"].tolist()))
        missing = [c for c in chains if c not in present]
        if missing:
            raise InputError(
                f"chain(s) {', '.join(missing)} not in model {model_index}",
                path=path,
                field="chains",
                expected="one of " + ", ".join(present),
                found=", ".join(missing),
            )
        mask &= np.isin(atoms["chain_id"], chains)
    if not mask.any():
        raise InputError(
            f"selection '{selection}' with chains {chains if chains else 'all'} "
            f"matches no atom in model {model_index}",
            path=path,
            field="selection",
            expected="at least one atom",
            found="0 atoms",
        )
    structure = Structure(
        coords_A=atoms["coords_A"][mask],
        element=atoms["element"][mask],
        atom_name=atoms["atom_name"][mask],
        residue_name=atoms["residue_name"][mask],
        residue_seq=atoms["residue_seq"][mask],
        chain_id=atoms["chain_id"][mask],
        b_factor_A2=atoms["b_factor_A2"][mask],
        metadata={
            "source": str(path),
            "selection": selection,
            "chains": list(chains) if chains is not None else None,
            "model_index": model_index,
            "n_models_in_file": len(st),
        },
    )
    if known_elements is not None:
        check_elements(structure, known_elements, path=path)
    return structure


def check_elements(
    structure: Structure, known_elements: Iterable[str], path: str | os.PathLike | None = None
) -> None:
    """Raise :class:`InputError` naming the first atom whose element is not known."""
    known = {str(e).upper() for e in known_elements}
    bad = ~np.isin(structure.element, sorted(known))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        unknown = sorted(set(structure.element[bad].tolist()))
        raise InputError(
            f"{int(bad.sum())} atom(s) with unknown element(s) {', '.join(unknown)}; first: "
            f"atom '{structure.atom_name[i]}' of {structure.residue_name[i]} "
            f"{structure.chain_id[i]}{structure.residue_seq[i]}",
            path=path,
            field="element",
            expected="one of " + " ".join(sorted(known)),
            found=unknown[0],
        )


def _read_gemmi(path: Path) -> gemmi.Structure:
    if not path.is_file():
        raise InputError("file not found", path=path, expected="a PDB or mmCIF file")
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(
            f"cannot read as PDB or mmCIF: {exc}", path=path, expected="a PDB or mmCIF file"
        ) from exc
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise InputError("no atoms in file", path=path, expected="ATOM/HETATM records or atom_site")
    return st


def _element_symbol(atom: gemmi.Atom) -> str:
    """Upper-case element; falls back on the atom name's first letter when gemmi does not know."""
    symbol = atom.element.name
    if symbol != "X":
        return symbol.upper()
    letters = "".join(ch for ch in atom.name if ch.isalpha())
    if letters and gemmi.Element(letters[0]).name != "X":
        return letters[0].upper()
    return "X"


def _atom_table(model: gemmi.Model) -> dict[str, np.ndarray]:
    """Per-atom arrays of a gemmi model, plus residue classes used by the selections."""
    coords, element, name, res_name, res_seq, chain_id, b_iso = [], [], [], [], [], [], []
    hydrogen, water, amino, nucleotide = [], [], [], []
    for chain in model:
        for res in chain:
            info = gemmi.find_tabulated_residue(res.name)
            names = {a.name for a in res}
            is_amino = (info is not None and info.is_amino_acid()) or {"N", "CA", "C"} <= names
            is_nucleotide = (info is not None and info.is_nucleic_acid()) or (
                "P" in names and ({"C1'", "C4'"} <= names or {"C1*", "C4*"} <= names)
            )
            is_water = res.is_water()
            for atom in res:
                p = atom.pos
                coords.append((p.x, p.y, p.z))
                element.append(_element_symbol(atom))
                name.append(atom.name)
                res_name.append(res.name)
                res_seq.append(res.seqid.num)
                chain_id.append(chain.name)
                b_iso.append(atom.b_iso)
                hydrogen.append(atom.element.is_hydrogen)
                water.append(is_water)
                amino.append(is_amino)
                nucleotide.append(is_nucleotide)
    return {
        "coords_A": np.asarray(coords, dtype=np.float64).reshape(-1, 3),
        "element": np.asarray(element, dtype=str),
        "atom_name": np.asarray(name, dtype=str),
        "residue_name": np.asarray(res_name, dtype=str),
        "residue_seq": np.asarray(res_seq, dtype=np.int64),
        "chain_id": np.asarray(chain_id, dtype=str),
        "b_factor_A2": np.asarray(b_iso, dtype=np.float64),
        "hydrogen": np.asarray(hydrogen, dtype=bool),
        "water": np.asarray(water, dtype=bool),
        "amino": np.asarray(amino, dtype=bool),
        "nucleotide": np.asarray(nucleotide, dtype=bool),
    }


def _selection_mask(atoms: dict[str, np.ndarray], selection: str) -> np.ndarray:
    name, element = atoms["atom_name"], atoms["element"]
    # Element checks keep calcium ions named "CA" and odd ligands out of the backbone beads.
    ca = atoms["amino"] & (name == "CA") & (element == "C")
    p = atoms["nucleotide"] & (name == "P") & (element == "P")
    if selection == "all":
        return np.ones(len(name), dtype=bool)
    if selection == "heavy":
        return ~atoms["hydrogen"] & ~atoms["water"]
    if selection == "ca":
        return ca
    if selection == "ca+p":
        return ca | p
    if selection == "backbone":
        return (atoms["amino"] & np.isin(name, sorted(_PROTEIN_BACKBONE))) | (
            atoms["nucleotide"] & np.isin(name, sorted(_NUCLEIC_BACKBONE))
        )
    raise AssertionError(selection)  # checked by the caller


# --------------------------------------------------------------------------------------------
# Writing


def write_structure(path: str | os.PathLike, structure: Structure) -> Path:
    """Write ``structure`` as PDB (.pdb, .ent) or mmCIF (.cif, .mmcif); ``.gz`` adds gzip.

    Written to a temporary file, then renamed. Returns ``path``.
    """
    coords = np.asarray(structure.coords_A, dtype=np.float64)[None]
    return write_models(path, structure, coords)


def reference_path(folder: str | os.PathLike, structure: Structure, stem: str = "reference"):
    """``folder/stem.pdb``, or ``stem.cif`` when the atoms do not fit the PDB format (chain
    names longer than two characters, as in large complexes, or more than 99,999 atoms)."""
    fits = structure.n_atoms <= 99_999 and all(len(str(c)) <= 2 for c in set(structure.chain_id))
    return Path(folder) / f"{stem}{'.pdb' if fits else '.cif'}"


def model_suffix_for(structure: Structure) -> str:
    """ ".pdb" when the atoms fit the PDB format, else ".cif" (see :func:`reference_path`)."""
    return reference_path(".", structure).suffix


def short_chain_ids(structure: Structure) -> Structure:
    """A copy whose chain names fit PDB (≤ 2 characters), for viewers that want PDB text:
    each long name becomes a unique two-character code; short names are kept."""
    import dataclasses
    import itertools
    import string

    names = [str(c) for c in dict.fromkeys(structure.chain_id.tolist())]
    if all(len(n) <= 2 for n in names):
        return structure
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits
    taken = {n for n in names if len(n) <= 2}
    codes = (a + b for a, b in itertools.product(alphabet, repeat=2) if a + b not in taken)
    mapping = {n: (n if len(n) <= 2 else next(codes)) for n in names}
    chain_id = np.array([mapping[str(c)] for c in structure.chain_id.tolist()], dtype=object)
    return dataclasses.replace(structure, chain_id=chain_id.astype(structure.chain_id.dtype))


def find_reference(folder: str | os.PathLike, stem: str = "reference") -> Path:
    """The model :func:`reference_path` wrote in ``folder`` (.pdb or .cif)."""
    for suffix in (".pdb", ".cif"):
        path = Path(folder) / f"{stem}{suffix}"
        if path.exists():
            return path
    raise InputError("reference model not found", path=Path(folder) / f"{stem}.pdb")


def write_models(
    path: str | os.PathLike, structure: Structure, coords_A_per_model: np.ndarray
) -> Path:
    """Write M models of the same atoms (e.g. a deformation trajectory) to one file.

    structure: the atoms' identities (names, residues, chains, elements, B-factors).
    coords_A_per_model: (M, N, 3) Å, N = ``structure.n_atoms``.
    Format from the extension as :func:`write_structure`; PDB gets MODEL/ENDMDL records,
    mmCIF one ``pdbx_PDB_model_num`` per model. Atomic: temporary file, then rename.
    """
    path = Path(path)
    coords = np.asarray(coords_A_per_model, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[1:] != (structure.n_atoms, 3):
        raise InputError(
            "coordinates do not match the structure",
            path=path,
            field="coords_A_per_model",
            expected=f"(M, {structure.n_atoms}, 3)",
            found=str(coords.shape),
        )
    is_gz = path.suffix.lower() == ".gz"
    suffix = Path(path.stem).suffix.lower() if is_gz else path.suffix.lower()
    if suffix not in _PDB_SUFFIXES + _CIF_SUFFIXES:
        raise InputError(
            "unknown model file extension",
            path=path,
            expected=" ".join(_PDB_SUFFIXES + _CIF_SUFFIXES) + " (optionally .gz)",
            found=suffix or "(none)",
        )
    st = _to_gemmi(structure, coords)
    if suffix in _PDB_SUFFIXES:
        options = gemmi.PdbWriteOptions(minimal=True)
        options.cryst1_record = False  # no unit cell: a 1 Å dummy CRYST1 misleads some viewers
        try:
            text = st.make_pdb_string(options)
        except RuntimeError as exc:  # e.g. chain names longer than 2 characters
            raise InputError(
                f"cannot be written as PDB: {exc}", path=path, expected="an mmCIF name (.cif)"
            ) from exc
    else:
        text = st.make_mmcif_document().as_string()
    data = text.encode("utf-8")
    if is_gz:
        data = gzip.compress(data, mtime=0)  # mtime 0: same input, same bytes
    return atomic_write_bytes(path, data)


def _residue_starts(structure: Structure) -> np.ndarray:
    """Indices of atoms that begin a new residue (chain, number or name changes)."""
    n = structure.n_atoms
    start = np.ones(n, dtype=bool)
    if n > 1:
        start[1:] = (
            (structure.chain_id[1:] != structure.chain_id[:-1])
            | (structure.residue_seq[1:] != structure.residue_seq[:-1])
            | (structure.residue_name[1:] != structure.residue_name[:-1])
        )
    return np.flatnonzero(start)


def _build_model(structure: Structure, coords_A: np.ndarray, number: int) -> gemmi.Model:
    model = gemmi.Model(number)
    starts = _residue_starts(structure)
    ends = np.append(starts[1:], structure.n_atoms)
    chain = None
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        chain_name = str(structure.chain_id[s])
        if chain is None or chain.name != chain_name:
            model.add_chain(gemmi.Chain(chain_name))
            chain = model[len(model) - 1]
        res = gemmi.Residue()
        res.name = str(structure.residue_name[s])
        res.seqid = gemmi.SeqId(int(structure.residue_seq[s]), " ")
        for i in range(s, e):
            atom = gemmi.Atom()
            atom.name = str(structure.atom_name[i])
            atom.element = gemmi.Element(str(structure.element[i]))
            atom.pos = gemmi.Position(*coords_A[i].tolist())
            atom.occ = 1.0
            atom.b_iso = float(structure.b_factor_A2[i])
            res.add_atom(atom)
        chain.add_residue(res)
    return model


def _to_gemmi(structure: Structure, coords_A_per_model: np.ndarray) -> gemmi.Structure:
    st = gemmi.Structure()
    st.name = "deephemnma"
    for m, coords in enumerate(coords_A_per_model, start=1):
        st.add_model(_build_model(structure, coords, m))
    st.setup_entities()
    st.assign_het_flags()
    st.assign_serial_numbers()
    return st
