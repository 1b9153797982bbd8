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
