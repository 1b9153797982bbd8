"""``deephemnma nma`` through the real entry point: files written, exit codes, exports."""

from __future__ import annotations

import numpy as np
import pytest

from deephemnma.cli.main import main
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.nma import load_modes

AKE_4 = str(package_data_path("4ake_A.pdb"))
AKE_1 = str(package_data_path("1ake.pdb"))


def test_nma_writes_modes_file(tmp_path, capsys):
    out = tmp_path / "modes.npz"
    assert main(["nma", AKE_4, "-o", str(out), "--modes", "7-9", "--quiet"]) == 0
    modes = load_modes(out)
    assert modes.mode_numbers.tolist() == list(range(1, 21))
    assert modes.n_atoms == 1656
    assert modes.parameters["method"] == "rtb"
    assert modes.parameters["selection"] == "heavy"
    text = capsys.readouterr().out
    assert "collectivity" in text and "eigenvalue" in text


def test_nma_compare_and_exports(tmp_path, capsys):
    out = tmp_path / "ca.npz"
    code = main(
        [
            "nma",
            AKE_4,
            "-o",
            str(out),
            "--selection",
            "ca",
            "--method",
            "anm",
            "--cutoff",
            "15",
            "--modes",
            "7-9,11",
            "--compare",
            AKE_1,
            "--nmd",
            str(tmp_path / "m.nmd"),
            "--continuousflex",
            str(tmp_path / "cf"),
            "--animate",
            str(tmp_path / "anim"),
            "--amplitude",
            "100",
            "--frames",
            "8",
            "--figure",
            str(tmp_path / "fig.png"),
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "overlap" in text and "cumulative" in text and "RMSD" in text
    modes = load_modes(out).select([7, 8, 9, 11])

    # NMWiz file: coordinates and mode vectors read back.
    lines = (tmp_path / "m.nmd").read_text().splitlines()
    coords = np.array(next(x for x in lines if x.startswith("coordinates")).split()[1:], float)
    np.testing.assert_allclose(coords.reshape(-1, 3), modes.structure.coords_A, atol=1e-3)
    mode_lines = [x.split() for x in lines if x.startswith("mode ")]
    assert [int(x[1]) for x in mode_lines] == [7, 8, 9, 11]
    np.testing.assert_allclose(
        np.array(mode_lines[0][3:], float).reshape(-1, 3), modes.vectors[0], atol=1e-6
    )

    # ContinuousFlex: one vec.N per mode, unit norm, listed in modes.xmd.
    for k, number in enumerate(modes.mode_numbers):
        vec = np.loadtxt(tmp_path / "cf" / "modes" / f"vec.{number}")
        np.testing.assert_allclose(vec, modes.vectors[k], atol=1e-8)
    xmd = (tmp_path / "cf" / "modes.xmd").read_text()
    assert "_nmaModefile" in xmd and "modes/vec.11" in xmd
    atoms = read_structure(tmp_path / "cf" / "atoms.pdb", selection="all")
    assert atoms.n_atoms == modes.n_atoms

    # Animation of mode 7: frame f is r + q_f v_7 with q_f = 100 sin(2π f / 8).
    anim = tmp_path / "anim" / "mode_007.pdb"
    frame2 = read_structure(anim, selection="all", model_index=2)
    np.testing.assert_allclose(
        frame2.coords_A, modes.structure.coords_A + 100.0 * modes.vectors[0], atol=2e-3
    )
    assert (tmp_path / "anim" / "mode_011.pdb").is_file()
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_nma_reads_its_own_modes_file(tmp_path, capsys):
    out = tmp_path / "modes.npz"
    assert main(["nma", AKE_4, "-o", str(out), "--n-modes", "10", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["nma", str(out), "--modes", "7-10", "--compare", AKE_1]) == 0
    assert "overlap" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--modes", "7-30"], "beyond the modes computed"),
        (["--cutoff", "1"], "disconnected"),
        (["--cutoff", "2"], "at least 20 zero modes instead of six"),
        (["--selection", "nonsense"], "selection"),
        (["--chains", "Z"], "chain"),
    ],
)
def test_nma_bad_input_exits_2(tmp_path, capsys, args, message):
    code = main(["nma", AKE_4, "-o", str(tmp_path / "m.npz"), "--quiet", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_nma_missing_model_exits_2(tmp_path, capsys):
    assert main(["nma", str(tmp_path / "none.pdb"), "-o", str(tmp_path / "m.npz")]) == 2
    assert "none.pdb" in capsys.readouterr().err


def test_nma_help_states_units_and_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option, so phrases are not wrapped
    assert main(["nma", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("Å", "ContinuousFlex", "8 Å", "20 Å", "default", "1-6"):
        assert needle.lower() in text.lower(), needle


# ------------------------------------------------------------------ maps: pseudoatoms, fitting


MAP_VOXEL_A = 1.5
MAP_BOX = 64
MAP_CENTER_A = MAP_BOX // 2 * MAP_VOXEL_A  # header origin 0: the center voxel is at 48 Å


@pytest.fixture()
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: avoid OpenMP oversubscription
    yield
    torch.set_num_threads(before)


def _render(structure, coords_A, bfactor_A2):
    import torch

    from deephemnma.project import atom_model, density_map

    model = atom_model(structure, bfactor_A2=bfactor_A2, dtype=torch.float64)
    coords = torch.as_tensor(coords_A, dtype=torch.float64)
    return density_map(coords, model.weight, model.sigma_A, MAP_BOX, MAP_VOXEL_A).numpy()


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """4AKE (B 300 Å², centered) and 1AKE chain A superposed onto it (B 100 Å²), as MRC maps
    with header origin 0; and 1AKE superposed onto 4AKE's file frame, in a map whose header
    origin puts its center voxel at (0, 0, 0) Å."""
    import mrcfile

    from deephemnma.io.mrc import write_volume
    from deephemnma.nma.analysis import kabsch, match_atoms

    folder = tmp_path_factory.mktemp("maps")
    ref = read_structure(AKE_4, selection="heavy")
    centered = ref.centered()
    target = read_structure(AKE_1, selection="heavy", chains=["A"])
    ref_idx, tgt_idx = match_atoms(ref, target, ("CA",))
    rotation, shift = kabsch(target.coords_A[tgt_idx], ref.coords_A[ref_idx])
    on_file_frame = target.coords_A @ rotation.T + shift
    on_centered = on_file_frame - ref.center_of_mass_A()
    write_volume(folder / "4ake.mrc", _render(centered, centered.coords_A, 300.0), MAP_VOXEL_A)
    write_volume(folder / "1ake.mrc", _render(target, on_centered, 100.0), MAP_VOXEL_A)
    header = folder / "1ake_origin.mrc"
    write_volume(header, _render(target, on_file_frame, 100.0), MAP_VOXEL_A)
    with mrcfile.open(header, mode="r+") as mrc:
        mrc.header.origin = (-MAP_CENTER_A,) * 3
    return {
        "folder": folder,
        "target": target,
        "tgt_idx": tgt_idx,
        "ref_idx": ref_idx,
        "on_file_frame": on_file_frame,
        "on_centered": on_centered,
    }


def _ca_rmsd(fitted_path, maps, expected_A):
    fitted = read_structure(fitted_path, selection="heavy")
    diff = fitted.coords_A[maps["ref_idx"]] - expected_A[maps["tgt_idx"]]
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1))))


def test_nma_map_to_pseudoatom_modes(tmp_path, capsys, maps, one_thread):
    import json

    from deephemnma.io.mrc import read_volume
    from deephemnma.nma.fit import map_center_of_mass_A

    out = tmp_path / "map_modes.npz"
    code = main(["nma", str(maps["folder"] / "4ake.mrc"), "-o", str(out), "--modes", "7-9"])
    assert code == 0
    text = capsys.readouterr().out
    assert "pseudoatoms" in text and "representation error" in text
    pdb = tmp_path / "4ake_pseudoatoms.pdb"
    report = json.loads(pdb.with_suffix(".json").read_text())
    assert report["representation_error"] < 0.05 and report["converged"]
    modes = load_modes(out)
    assert modes.n_atoms == report["n_atoms"] == len(report["weights"])
    assert modes.parameters["method"] == "anm"
    assert modes.parameters["cutoff_rule"].startswith(
        ("median-distance-to-12th-neighbour", "continuousflex-relative-95th-percentile")
    )
    # Pseudoatoms are written in the map's frame: their weighted centroid is the map's
    # center of mass, counted from the header origin (0) rather than the center voxel.
    atoms = read_structure(pdb, selection="all")
    weights = np.array(report["weights"])
    centroid = (atoms.coords_A * weights[:, None]).sum(0) / weights.sum()
    volume, voxel = read_volume(maps["folder"] / "4ake.mrc")
    expected = map_center_of_mass_A(volume, voxel, threshold=report["threshold"]) + MAP_CENTER_A
    np.testing.assert_allclose(centroid, expected, atol=0.5)
    # The pseudoatom PDB as MODEL: recognized (atoms named DENS), weights from the JSON.
    again = tmp_path / "again.npz"
    assert main(["nma", str(pdb), "-o", str(again), "--n-modes", "9", "--quiet"]) == 0
    modes_again = load_modes(again)
    assert modes_again.parameters["method"] == "anm"
    assert modes_again.parameters["cutoff_A"] == pytest.approx(
        modes.parameters["cutoff_A"], rel=1e-3
    )  # PDB keeps 3 decimals
    np.testing.assert_allclose(
        modes_again.structure.metadata["pseudoatom_weights"], weights, rtol=1e-6
    )


@pytest.mark.parametrize("placement", ["center", "header"])
def test_nma_fit_map_ranks_modes_and_writes_model(tmp_path, capsys, maps, one_thread, placement):
    import json

    target_map = "1ake.mrc" if placement == "center" else "1ake_origin.mrc"
    out = tmp_path / "m.npz"
    code = main(
        [
            "nma",
            AKE_4,
            "-o",
            str(out),
            "--n-modes",
            "12",
            "--modes",
            "7-9",
            "--fit-map",
            str(maps["folder"] / target_map),
            "--fit-resolution",
            "8",
            "--fit-placement",
            placement,
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "ranked" in text and "correlation" in text
    report = json.loads((tmp_path / "m_fit.json").read_text())
    assert report["ranking"][0] == 7
    assert [m["mode"] for m in report["modes"]] == [7, 8, 9]
    assert report["correlation_after"] > report["correlation_before"] + 0.1
    # The fitted model lies on 1AKE in the target map's frame (CA RMSD 7.1 Å before).
    expected = (
        maps["on_centered"] + MAP_CENTER_A if placement == "center" else maps["on_file_frame"]
    )
    assert _ca_rmsd(tmp_path / "m_fit.pdb", maps, expected) < 3.5  # modes 7-9 alone: 3.1 Å


@pytest.mark.parametrize(
    "args,message",
    [
        (["--threshold", "1e9"], "nothing above the threshold"),
        (["--fit-map", "missing.mrc"], "target map not found"),
        (["--fit-placement", "nowhere"], "placement"),
        (["--fit-map", "4ake.mrc", "--modes", "5-8"], "rigid-body"),
    ],
)
def test_nma_map_bad_input_exits_2(tmp_path, capsys, maps, one_thread, args, message):
    folder = maps["folder"]
    args = [str(folder / a) if a.endswith(".mrc") else a for a in args]
    code = main(["nma", str(folder / "4ake.mrc"), "-o", str(tmp_path / "m.npz"), "--quiet", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_nma_map_without_voxel_size_exits_2(tmp_path, capsys):
    from deephemnma.io.mrc import write_volume

    path = write_volume(tmp_path / "novoxel.mrc", np.ones((8, 8, 8), np.float32), 0.0)
    assert main(["nma", str(path), "-o", str(tmp_path / "m.npz"), "--quiet"]) == 2
    assert "voxel size" in capsys.readouterr().err
