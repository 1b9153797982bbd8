"""evaluate: the paper's metrics against values computed by hand on a tiny constructed case."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from deephemnma.cli.main import main
from deephemnma.errors import InputError
from deephemnma.evaluate import (
    PAPER_ROWS,
    compare,
    evaluate,
    format_table,
    match_rows,
    table_text,
    write_evaluation,
)
from deephemnma.io.star import ParticleTable, make_optics, write_particles
from deephemnma.nma.modes import Modes, save_modes
from deephemnma.structure import Structure

COORDS = np.array([[10.0, 0.0, 0.0], [0.0, 5.0, -5.0]])
# Two modes (unit norm over 3N, deliberately not orthogonal: the RMSD must not assume it).
V7 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) / np.sqrt(2)
V8 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) / np.sqrt(2)


def _modes() -> Modes:
    structure = Structure(
        coords_A=COORDS,
        element=np.array(["C", "C"]),
        atom_name=np.array(["CA", "CA"]),
        residue_name=np.array(["ALA", "GLY"]),
        residue_seq=np.array([1, 2]),
        chain_id=np.array(["A", "A"]),
        b_factor_A2=np.zeros(2),
    )
    return Modes(structure, np.array([7, 8]), np.array([1.0, 2.0]), np.stack([V7, V8]))


TRUTH = pd.DataFrame(
    {
        "rlnImageName": ["000001@s.mrcs", "000002@s.mrcs", "000003@s.mrcs"],
        "rlnAngleRot": [10.0, 0.0, 50.0],
        "rlnAngleTilt": [40.0, 0.0, 120.0],
        "rlnAnglePsi": [20.0, 0.0, 300.0],
        "rlnOriginXAngst": [0.5, -1.0, 0.0],
        "rlnOriginYAngst": [0.0, 1.0, -0.25],
        "deephemnmaAmplitude07": [100.0, -50.0, 0.0],
        "deephemnmaAmplitude08": [10.0, 20.0, 30.0],
        "rlnOpticsGroup": [1, 1, 1],
    }
)


def _predicted() -> pd.DataFrame:
    p = TRUTH.copy()
    # Row 1: in-plane rotation by 6° (psi + 6): axes metric (6 + 6 + 0)/3 = 4°, geodesic 6°.
    p.loc[0, "rlnAnglePsi"] += 6.0
    # Row 2: at tilt 0, rot + 30° is again a rotation about z: axes 20° (gross), geodesic 30°.
    p.loc[1, "rlnAngleRot"] += 30.0
    # Row 3: same orientation written differently (rot ± 360), error 0.
    p.loc[2, "rlnAngleRot"] -= 360.0
    p["rlnOriginXAngst"] += [0.1, -0.3, 0.0]
    p["rlnOriginYAngst"] += [0.4, 0.0, 0.2]
    p["deephemnmaAmplitude07"] += [3.0, -6.0, 0.0]
    p["deephemnmaAmplitude08"] += [0.0, 2.0, -4.0]
    # Shuffle the rows: matching must go by image name.
    return p.iloc[[2, 0, 1]].reset_index(drop=True)


def _table(df, path=None) -> ParticleTable:
    return ParticleTable(make_optics(1.0, 64, 200.0, 2.0, 0.1), df, path)


def _relion_matrix(angles_deg) -> np.ndarray:
    # CONVENTIONS.md, independently of deephemnma.geometry.
    return Rotation.from_euler("ZYZ", angles_deg, degrees=True).as_matrix().T


def _rmsd(a, b) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


def _hand_metrics():
    truth, pred = TRUTH, _predicted().set_index("rlnImageName").loc[TRUTH["rlnImageName"]]
    amp_cols = ["deephemnmaAmplitude07", "deephemnmaAmplitude08"]
    dq = pred[amp_cols].to_numpy() - truth[amp_cols].to_numpy()
    rmsd_amp, rmsd_rot, rmsd_shift = [], [], []
    for i in range(3):
        q_hat, q = pred[amp_cols].to_numpy()[i], truth[amp_cols].to_numpy()[i]
        est = COORDS + q_hat[0] * V7 + q_hat[1] * V8
        true = COORDS + q[0] * V7 + q[1] * V8
        rmsd_amp.append(_rmsd(est, true))
        a_hat = _relion_matrix(pred[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()[i])
        a = _relion_matrix(truth[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()[i])
        rmsd_rot.append(_rmsd(COORDS @ a_hat.T, COORDS @ a.T))
        shift_hat = pred[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy()[i]
        shift = truth[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy()[i]
        moved_hat = COORDS.copy()
        moved_hat[:, :2] -= shift_hat
        moved = COORDS.copy()
        moved[:, :2] -= shift
        rmsd_shift.append(_rmsd(moved_hat, moved))
    return np.abs(dq), np.array(rmsd_amp), np.array(rmsd_rot), np.array(rmsd_shift)


def test_metrics_match_hand_computation():
    result = evaluate(_table(_predicted()), _table(TRUTH), modes=_modes())
    abs_dq, rmsd_amp, rmsd_rot, rmsd_shift = _hand_metrics()
    assert result["n"] == 3 and result["matched_by"] == "rlnImageName"
    modes = {p["mode"]: p for p in result["amplitudes"]["modes"]}
    assert modes[7]["mean"] == pytest.approx(3.0)  # |3|, |−6|, 0
    assert modes[7]["std"] == pytest.approx(np.std([3.0, 6.0, 0.0]))
    assert modes[8]["mean"] == pytest.approx(2.0)  # 0, 2, 4
    assert modes[8]["median"] == pytest.approx(2.0)
    assert result["amplitudes"]["mean_over_modes"] == pytest.approx(2.5)
    assert abs_dq.mean(0) == pytest.approx([3.0, 2.0])

    angles = result["angles"]
    assert angles["axes"]["mean"] == pytest.approx(8.0, abs=1e-6)  # (4 + 20 + 0) / 3
    assert angles["axes"]["median"] == pytest.approx(4.0, abs=1e-6)
    assert angles["geodesic"]["mean"] == pytest.approx(12.0, abs=1e-6)  # (6 + 30 + 0) / 3
    assert angles["gross_fraction"] == pytest.approx(1 / 3)

    shifts = result["shifts"]
    assert shifts["x"]["mean"] == pytest.approx((0.1 + 0.3 + 0.0) / 3)
    assert shifts["y"]["mean"] == pytest.approx((0.4 + 0.0 + 0.2) / 3)

    rmsd = result["rmsd"]
    assert rmsd["amplitudes"]["mean"] == pytest.approx(rmsd_amp.mean())
    assert rmsd["amplitudes"]["std"] == pytest.approx(rmsd_amp.std())
    assert rmsd["angles"]["mean"] == pytest.approx(rmsd_rot.mean())
    assert rmsd["angles"]["median"] == pytest.approx(np.median(rmsd_rot))
    assert rmsd["shifts"]["mean"] == pytest.approx(rmsd_shift.mean())
    # The shift RMSD is the length of the shift difference.
    assert rmsd_shift[0] == pytest.approx(np.hypot(0.1, 0.4))


def test_rotation_rmsd_of_in_plane_rotation_by_hand():
    # Rotating the reference by 6° about the view axis moves atom i by 2·sin(3°)·ρ_i, where ρ_i
    # is its distance to that axis; for row 1 the view axis is row 3 of A.
    comparison = compare(_table(_predicted()), _table(TRUTH), modes=_modes())
    row = int(np.flatnonzero(comparison.angles_truth[:, 2] == 20.0)[0])
    a = _relion_matrix([10.0, 40.0, 20.0])
    in_plane = (COORDS @ a.T)[:, :2]
    moved = 2 * np.sin(np.radians(3.0)) * np.linalg.norm(in_plane, axis=1)
    assert comparison.rmsd_angles_A[row] == pytest.approx(np.sqrt(np.mean(moved**2)))


def test_confidence_by_pose_spread_by_hand():
    # Spreads rank the rows: image 3 (error 0) most consistent, image 2 (20°, gross) least.
    pred = _predicted()
    spread = {"000001@s.mrcs": 2.0, "000002@s.mrcs": 9.0, "000003@s.mrcs": 0.5}
    pred["deephemnmaPoseSpreadDeg"] = pred["rlnImageName"].map(spread)
    result = evaluate(_table(pred), _table(TRUTH))
    confidence = result["confidence"]
    assert confidence["spearman_spread_vs_angle_error"] == pytest.approx(1.0)
    kept = {row["fraction"]: row for row in confidence["kept_lowest_spread"]}
    assert kept[0.5]["n"] == 2  # round(1.5) = 2: images 3 and 1
    assert kept[0.5]["angle_mean_deg"] == pytest.approx(2.0, abs=1e-6)  # (0 + 4) / 2
    assert kept[0.5]["spread_max_deg"] == 2.0 and kept[0.5]["gross_fraction"] == 0.0
    assert kept[0.5]["amplitude_mae"] == pytest.approx((0 + 4 + 3 + 0) / 4)
    assert kept[1.0]["angle_mean_deg"] == pytest.approx(result["angles"]["axes"]["mean"])
    assert "confidence" not in evaluate(_table(_predicted()), _table(TRUTH))
    from deephemnma.evaluate import confidence_text

    line = confidence_text(result)
    assert "Spearman 1.00" in line and "50% / 75% / 90% / 100%" in line
    assert "angle 2.00 / " in line and "> 10° 0.00 / " in line


def test_without_modes_no_model_rmsd():
    result = evaluate(_table(_predicted()), _table(TRUTH))
    assert result["rmsd"]["amplitudes"] is None and result["rmsd"]["angles"] is None
    assert result["rmsd"]["shifts"] is not None


def test_matching_by_order_and_errors():
    pred = _predicted().drop(columns="rlnImageName")
    pred_rows, truth_rows, how = match_rows(_table(pred), _table(TRUTH))
    assert how == "order" and list(pred_rows) == list(truth_rows) == [0, 1, 2]
    renamed = _predicted()
    renamed["rlnImageName"] = ["000001@other.mrcs", "000002@other.mrcs", "000003@other.mrcs"]
    assert match_rows(_table(renamed), _table(TRUTH))[2] == "order"
    with pytest.raises(InputError, match="cannot match rows"):
        match_rows(_table(renamed.iloc[:2]), _table(TRUTH))
    # A subset of images: matched by name, the others counted as unmatched.
    result = evaluate(_table(_predicted()), _table(TRUTH.iloc[[0, 2]].reset_index(drop=True)))
    assert (result["n"], result["n_unmatched"]) == (2, 1)


def test_malformed_image_name_is_named_with_its_row():
    bad = _predicted()
    bad["rlnImageName"] = ["000001@s.mrcs", "0@s.mrcs", "000003@s.mrcs"]
    with pytest.raises(InputError, match="particle row 2") as err:
        match_rows(_table(bad), _table(TRUTH))
    assert err.value.field == "rlnImageName"


def test_matching_survives_a_table_written_elsewhere(tmp_path):
    truth_path = tmp_path / "a" / "truth.star"
    truth_path.parent.mkdir()
    write_particles(truth_path, _table(TRUTH))
    pred = _table(_predicted(), tmp_path / "a" / "pred.star")
    moved = tmp_path / "b" / "c" / "pred.star"
    moved.parent.mkdir(parents=True)
    write_particles(moved, pred)  # relative stack paths are rewritten to ../../a/s.mrcs
    from deephemnma.io.star import read_particles

    result = evaluate(read_particles(moved), read_particles(truth_path))
    assert result["matched_by"] == "rlnImageName" and result["n"] == 3
    assert result["angles"]["axes"]["mean"] == pytest.approx(8.0, abs=1e-6)


def test_table_and_json(tmp_path):
    result = evaluate(_table(_predicted()), _table(TRUTH), modes=_modes())
    text = table_text(format_table(result, "t", PAPER_ROWS))
    assert "predicted vs truth" in text and "paper T3/T4" in text and "7.8" in text
    path = write_evaluation(result, tmp_path / "e.json")
    assert json.loads(path.read_text())["angles"]["gross_fraction"] == pytest.approx(1 / 3)


def test_cli(tmp_path):
    truth = tmp_path / "truth.star"
    pred = tmp_path / "pred.star"
    write_particles(truth, _table(TRUTH))
    write_particles(pred, _table(_predicted()))
    modes = save_modes(tmp_path / "modes.npz", _modes())
    out = tmp_path / "eval"
    args = ["evaluate", str(pred), "--truth", str(truth), "--modes", str(modes), "-o", str(out)]
    assert main([*args, "--against", str(truth), "--paper", "all"]) == 0
    record = json.loads((out / "evaluation.json").read_text())
    assert [r["label"] for r in record["results"]] == [
        "predicted vs truth",
        "predicted vs against",
        "against vs truth",
    ]
    assert record["results"][2]["angles"]["axes"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert (out / "table.txt").exists() and (out / "scatter.png").exists()
    assert not (out / "helix.png").exists()  # only two modes: no 3D figure
    missing = tmp_path / "nope.star"
    assert main(["evaluate", str(missing), "--truth", str(truth), "-o", str(out)]) == 2
    assert main([*args, "--paper", "tableX"]) == 2
