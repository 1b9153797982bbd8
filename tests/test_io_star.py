# ruff: noqa: E501, W291, W293  (fixtures reproduce RELION/pyem lines: long, trailing spaces)
"""Particle STAR files (deephemnma.io.star): RELION 3.1 round trips, RELION 3.0 and cryoSPARC
exports, accessors with units, and errors that name the file and the column.

The fixtures are written the way the programs write them: RELION 3.1 (``# version 30001``,
``loop_`` with a trailing space, ``_label #n`` headers, space-aligned values), RELION 3.0
(``data_`` with no name, ``rlnMagnification`` + ``rlnDetectorPixelSize``, origins in pixels)
and pyem ``csparc2star.py`` from cryoSPARC (RELION 3.0 layout, stacks named ``.mrc`` inside
cryoSPARC job folders, a ``>`` prefix that some cryoSPARC versions put on paths, a
``ucsfUid`` column).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deephemnma.errors import InputError
from deephemnma.io import star
from deephemnma.io.star import (
    ParticleTable,
    amplitudes,
    angles_deg,
    common_image_size_px,
    common_pixel_size_A,
    ctf_parameters,
    image_size_px,
    make_optics,
    parse_image_name,
    pixel_size_A,
    read_particles,
    shifts_A,
    with_amplitudes,
    with_poses,
    write_particles,
)

RELION31 = """
# version 30001

data_optics

loop_ 
_rlnOpticsGroupName #1 
_rlnOpticsGroup #2 
_rlnMicrographOriginalPixelSize #3 
_rlnVoltage #4 
_rlnSphericalAberration #5 
_rlnAmplitudeContrast #6 
_rlnImagePixelSize #7 
_rlnImageSize #8 
_rlnImageDimensionality #9 
opticsGroup1            1     0.885000   300.000000     2.700000     0.100000     1.770000           64            2 
opticsGroup2            2     0.885000   300.000000     2.700000     0.100000     1.770000           64            2 
 

# version 30001

data_particles

loop_ 
_rlnCoordinateX #1 
_rlnCoordinateY #2 
_rlnImageName #3 
_rlnMicrographName #4 
_rlnOpticsGroup #5 
_rlnDefocusU #6 
_rlnDefocusV #7 
_rlnDefocusAngle #8 
_rlnPhaseShift #9 
_rlnCtfBfactor #10 
_rlnAngleRot #11 
_rlnAngleTilt #12 
_rlnAnglePsi #13 
_rlnOriginXAngst #14 
_rlnOriginYAngst #15 
_rlnClassNumber #16 
_rlnRandomSubset #17 
_deephemnmaAmplitude07 #18 
_deephemnmaAmplitude08 #19 
_deephemnmaAmplitude07Predicted #20 
_deephemnmaScore #21 
  1711.000000  3226.000000 000001@Extract/job007/Movies/mic_001.mrcs MotionCorr/job002/Movies/mic_001.mrc            1 14276.833984 13986.339844    42.416344     0.000000     0.000000   -88.139465    91.232239   162.538452    -1.328000     2.541000            1            1   -123.5   87.25   -120.0  0.734 
  2213.000000   781.000000 000002@Extract/job007/Movies/mic_001.mrcs MotionCorr/job002/Movies/mic_001.mrc            1 14276.833984 13986.339844    42.416344     0.000000     0.000000    14.507000    32.005997   -71.000183     0.442000    -3.115000            1            2     55.0  -12.5     50.5  0.512 
   500.000000   612.000000 000001@Extract/job007/Movies/mic_002.mrcs MotionCorr/job002/Movies/mic_002.mrc            2 20511.230469 20013.660156   -11.977100     0.000000    40.000000   170.000000   179.999000     0.000000     0.000000     0.000000            2            1      0.0    0.0      0.0  0.999 
"""

RELION30 = """
data_

loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnImageName #4
_rlnDefocusU #5
_rlnDefocusV #6
_rlnDefocusAngle #7
_rlnVoltage #8
_rlnSphericalAberration #9
_rlnAmplitudeContrast #10
_rlnMagnification #11
_rlnDetectorPixelSize #12
_rlnCtfFigureOfMerit #13
_rlnAngleRot #14
_rlnAngleTilt #15
_rlnAnglePsi #16
_rlnOriginX #17
_rlnOriginY #18
_rlnClassNumber #19
_rlnNormCorrection #20
Micrographs/mic_001.mrc  1711.000000  3226.000000 000001@Particles/Micrographs/mic_001_particles.mrcs 14276.833984 13986.339844    42.416344   300.000000     2.700000     0.100000 10000.000000    17.700000     0.131893   -88.139465    91.232239   162.538452     2.000000    -1.500000            1     0.801234
Micrographs/mic_001.mrc  2213.000000   781.000000 000002@Particles/Micrographs/mic_001_particles.mrcs 14276.833984 13986.339844    42.416344   300.000000     2.700000     0.100000 10000.000000    17.700000     0.131893    14.507000    32.005997   -71.000183    -0.500000     0.250000            1     0.791111
Micrographs/mic_002.mrc   500.000000   612.000000 000001@Particles/Micrographs/mic_002_particles.mrcs 20511.230469 20013.660156   -11.977100   200.000000     2.700000     0.100000 10000.000000    17.700000     0.120000   170.000000   179.999000     0.000000     0.000000     0.000000            1     0.812345
"""

# pyem csparc2star.py output (cryoSPARC v2-3), RELION 3.0 layout.
CRYOSPARC = """

data_

loop_
_rlnImageName #1
_rlnImagePixelSize #2
_rlnVoltage #3
_rlnAmplitudeContrast #4
_rlnSphericalAberration #5
_rlnDefocusU #6
_rlnDefocusV #7
_rlnDefocusAngle #8
_rlnPhaseShift #9
_rlnCtfBfactor #10
_rlnOpticsGroup #11
_rlnRandomSubset #12
_rlnOriginX #13
_rlnOriginY #14
_rlnAngleRot #15
_rlnAngleTilt #16
_rlnAnglePsi #17
_rlnClassNumber #18
_ucsfUid #19
000001@>J12/extract/012345678901234567890_mic_001_particles.mrc 1.0600000 300.00000 0.1000000 2.7000000 12000.500 11800.250 -65.12300 0.0000000 0.0000000 1 1 1.5000000 -2.2500000 -12.30000 88.10000 140.20000 1 10452716543213845231
000002@>J12/extract/012345678901234567890_mic_001_particles.mrc 1.0600000 300.00000 0.1000000 2.7000000 12000.500 11800.250 -65.12300 0.0000000 0.0000000 1 2 0.0000000 0.7500000 100.00000 12.00000 -3.00000 1 9871234567891234567
000001@>J12/extract/012345678901234567891_mic_002_particles.mrc 1.0600000 300.00000 0.1000000 2.7000000 15000.000 14500.000 10.00000 0.0000000 0.0000000 1 1 -3.0000000 4.0000000 45.00000 90.00000 0.00000 1 1234567890123456789
"""


def _write(tmp_path: Path, text: str, name: str = "particles.star") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- RELION 3.1 --------------------------------------------------------------------------------


def test_relion31_values_and_accessors(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION31))
    assert len(t) == 3 and list(t.optics[star.OPTICS_GROUP]) == [1, 2]
    assert t.particles[star.IMAGE_NAME].tolist()[2] == "000001@Extract/job007/Movies/mic_002.mrcs"
    np.testing.assert_array_equal(pixel_size_A(t), [1.77, 1.77, 1.77])
    assert common_pixel_size_A(t) == 1.77 and common_image_size_px(t) == 64
    np.testing.assert_array_equal(image_size_px(t), [64, 64, 64])
    ctf = ctf_parameters(t)
    np.testing.assert_array_equal(ctf.defocus_u_A, [14276.833984, 14276.833984, 20511.230469])
    np.testing.assert_array_equal(ctf.defocus_angle_deg, [42.416344, 42.416344, -11.9771])
    np.testing.assert_array_equal(ctf.voltage_kV, [300.0] * 3)
    np.testing.assert_array_equal(ctf.cs_mm, [2.7] * 3)
    np.testing.assert_array_equal(ctf.amplitude_contrast, [0.1] * 3)
    np.testing.assert_array_equal(ctf.bfactor_A2, [0.0, 0.0, 40.0])
    np.testing.assert_array_equal(angles_deg(t)[1], [14.507, 32.005997, -71.000183])
    np.testing.assert_array_equal(shifts_A(t)[0], [-1.328, 2.541])
    modes, q = amplitudes(t)
    np.testing.assert_array_equal(modes, [7, 8])
    np.testing.assert_array_equal(q, [[-123.5, 87.25], [55.0, -12.5], [0.0, 0.0]])
    modes_p, q_p = amplitudes(t, suffix="Predicted")
    np.testing.assert_array_equal(modes_p, [7])
    np.testing.assert_array_equal(q_p[:, 0], [-120.0, 50.5, 0.0])


def test_round_trip_keeps_order_values_and_unknown_columns(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION31))
    out = write_particles(tmp_path / "out.star", t)
    back = read_particles(out)
    pd.testing.assert_frame_equal(back.optics, t.optics, check_exact=True)
    pd.testing.assert_frame_equal(back.particles, t.particles, check_exact=True)
    assert list(back.particles.columns)[-4:] == [
        "deephemnmaAmplitude07",
        "deephemnmaAmplitude08",
        "deephemnmaAmplitude07Predicted",
        "deephemnmaScore",
    ]
    # Writing again gives the same bytes (no time stamps; deterministic formatting).
    again = write_particles(tmp_path / "again.star", back)
    assert again.read_bytes() == out.read_bytes()


def test_written_file_is_relion31_layout(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION31))
    text = write_particles(tmp_path / "out.star", t).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Independent check of the layout RELION 3.1 expects.
    assert lines[0] == "# version 30001"
    assert lines[1] == "data_optics" and lines[2] == "loop_"
    i = lines.index("data_particles")
    assert lines[i - 1] == "# version 30001" and lines[i + 1] == "loop_"
    headers = [ln.split()[0] for ln in lines[i + 2 :] if ln.startswith("_")]
    assert headers[:3] == ["_rlnCoordinateX", "_rlnCoordinateY", "_rlnImageName"]
    assert "_deephemnmaAmplitude07" in headers
    body = [ln for ln in lines[i + 2 :] if not ln.startswith("_")]
    assert len(body) == 3 and all(len(ln.split()) == len(headers) for ln in body)
    assert body[2].split()[2] == "000001@Extract/job007/Movies/mic_002.mrcs"


def test_random_floats_round_trip_exactly(tmp_path: Path):
    rng = np.random.default_rng(1)
    n = 500
    particles = pd.DataFrame(
        {
            "rlnImageName": [f"{i % 7 + 1:06d}@stacks/s{i // 7}.mrcs" for i in range(n)],
            "rlnOpticsGroup": np.ones(n, dtype=np.int64),
            "rlnDefocusU": rng.uniform(5000, 30000, n),
            "rlnAngleRot": rng.uniform(-180, 180, n),
            "rlnOriginXAngst": rng.normal(scale=1e-7, size=n),  # tiny values keep all digits
            "deephemnmaAmplitude07": rng.normal(scale=200, size=n),
            "deephemnmaAmplitude07Predicted": rng.normal(scale=200, size=n) * 1e12,
        }
    )
    t = ParticleTable(make_optics(0.325, 256, 200, 2.0, 0.1), particles)
    back = read_particles(write_particles(tmp_path / "r.star", t))
    pd.testing.assert_frame_equal(back.particles, particles, check_exact=True)
    pd.testing.assert_frame_equal(back.optics, t.optics, check_exact=True)


def test_loop_block_writes_what_starfile_writes():
    """Our column-wise writer against starfile's cell-by-cell one (an independent
    implementation of the same layout), over every kind of column a table can hold."""
    from starfile.writer import loop_block as starfile_loop_block

    frame = _every_kind_of_column()
    assert star.loop_block("particles", frame) == list(
        starfile_loop_block("particles", frame, float_format=None)
    )
    assert star.loop_block("", frame.iloc[:0]) == list(
        starfile_loop_block("", frame.iloc[:0], float_format=None)
    )


def test_columns_of_repeated_values_are_written_as_starfile_writes_them():
    """Past a few thousand rows, a column whose values repeat has each distinct value
    formatted once: the text stays starfile's (``-0.0`` stays apart from ``0.0``, every
    missing kind is ``<NA>``), including rows past the sample that decides."""
    from starfile.writer import loop_block as starfile_loop_block

    frame = pd.concat([_every_kind_of_column()] * 2000, ignore_index=True)
    frame["zeros"] = np.tile([0.0, -0.0, 0.0], 2000)
    frame.loc[5990, "f64"] = 7.25  # a value first seen after the sample
    frame["distinct"] = np.arange(len(frame)) / 7.0
    frame["equal_objects"] = pd.Series([1, 1.0, True] * 2000, dtype=object)
    frame["f32_zeros"] = np.tile(np.array([0.0, -0.0, 0.0], dtype=np.float32), 2000)
    assert star.loop_block("particles", frame) == list(
        starfile_loop_block("particles", frame, float_format=None)
    )


def _every_kind_of_column() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rlnImageName": ["000001@with space.mrcs", "000002@s.mrcs", ""],
            "f64": [0.1, np.nan, -0.0],
            "extremes": [1e-300, np.inf, 123456789.123],
            "i64": np.array([1, -2, 3], dtype=np.int64),
            "f32": np.array([0.1, 2.5, np.nan], dtype=np.float32),
            "flag": [True, False, True],
            "nullable": pd.array([1, None, 3], dtype="Int64"),
            "mixed": [1.5, "two words", None],
            "text": pd.array(["a", None, "c d"], dtype="string"),
        }
    )


# -- RELION 3.0 and cryoSPARC ------------------------------------------------------------------


def test_relion30_single_table(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION30))
    # Two optics groups: the third particle was recorded at 200 kV.
    assert t.optics[star.OPTICS_GROUP].tolist() == [1, 2]
    assert t.optics[star.VOLTAGE].tolist() == [300.0, 200.0]
    assert t.particles[star.OPTICS_GROUP].tolist() == [1, 1, 2]
    # 10000 · 17.7 µm / 10000 = 17.7 Å, the RELION 3.0 definition.
    np.testing.assert_allclose(pixel_size_A(t), 17.7, rtol=1e-12)
    for gone in ("rlnVoltage", "rlnMagnification", "rlnDetectorPixelSize", "rlnOriginX"):
        assert gone not in t.particles.columns
    # Origins become Å, same sign, same column position.
    cols = list(t.particles.columns)
    assert cols[cols.index("rlnAnglePsi") + 1 : cols.index("rlnAnglePsi") + 3] == [
        "rlnOriginXAngst",
        "rlnOriginYAngst",
    ]
    np.testing.assert_allclose(shifts_A(t), np.array([[2.0, -1.5], [-0.5, 0.25], [0, 0]]) * 17.7)
    ctf = ctf_parameters(t)
    np.testing.assert_array_equal(ctf.voltage_kV, [300, 300, 200])
    np.testing.assert_array_equal(ctf.phase_shift_deg, [0, 0, 0])  # RELION's default
    assert t.particles["rlnNormCorrection"].tolist() == [0.801234, 0.791111, 0.812345]
    with pytest.raises(InputError) as err:
        common_pixel_size_A(
            t.__class__(t.optics.assign(rlnImagePixelSize=[1.0, 2.0]), t.particles, t.path)
        )
    assert "rlnImagePixelSize" in str(err.value) and "disagree" in str(err.value)
    # Written back as RELION 3.1, and read again unchanged.
    back = read_particles(write_particles(tmp_path / "v31.star", t))
    pd.testing.assert_frame_equal(back.particles, t.particles, check_exact=True)


def test_cryosparc_export(tmp_path: Path):
    t = read_particles(_write(tmp_path, CRYOSPARC))
    assert len(t.optics) == 1 and t.particles[star.OPTICS_GROUP].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(pixel_size_A(t), [1.06] * 3)
    np.testing.assert_allclose(shifts_A(t)[0], [1.5 * 1.06, -2.25 * 1.06])
    np.testing.assert_array_equal(angles_deg(t)[2], [45.0, 90.0, 0.0])
    # The '>' stays in the table (exact round trip) and is removed when the path is used.
    name = t.particles[star.IMAGE_NAME].iloc[0]
    assert name.startswith("000001@>J12/")
    assert parse_image_name(name) == (1, "J12/extract/012345678901234567890_mic_001_particles.mrc")
    assert t.particles["ucsfUid"].iloc[0] == 10452716543213845231
    ctf = ctf_parameters(t)
    np.testing.assert_array_equal(ctf.defocus_v_A, [11800.25, 11800.25, 14500.0])


# -- editing ----------------------------------------------------------------------------------


def test_with_poses_and_amplitudes(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION31))
    angles = np.arange(9.0).reshape(3, 3)
    shifts = -np.arange(6.0).reshape(3, 2)
    t2 = with_poses(t, angles, shifts)
    np.testing.assert_array_equal(angles_deg(t2), angles)
    np.testing.assert_array_equal(shifts_A(t2), shifts)
    assert list(t2.particles.columns) == list(t.particles.columns)  # replaced in place
    assert angles_deg(t)[0, 0] == -88.139465  # the original is untouched
    q = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    t3 = with_amplitudes(t2, [7, 9, 10], q, suffix="Predicted")
    assert "deephemnmaAmplitude10Predicted" in t3.particles.columns
    modes, values = amplitudes(t3, suffix="Predicted")
    np.testing.assert_array_equal(modes, [7, 9, 10])
    np.testing.assert_array_equal(values, q)
    np.testing.assert_array_equal(amplitudes(t3)[0], [7, 8])  # plain columns unaffected
    with pytest.raises(InputError) as err:
        with_amplitudes(t, [7], np.zeros((2, 1)))
    assert "(3, 1)" in str(err.value)


def test_write_relocates_relative_image_paths(tmp_path: Path):
    (tmp_path / "a").mkdir()
    t = read_particles(_write(tmp_path / "a", RELION31))
    out = write_particles(tmp_path / "b" / "c" / "moved.star", t)
    back = read_particles(out)
    assert back.particles[star.IMAGE_NAME].iloc[0] == (
        "000001@../../a/Extract/job007/Movies/mic_001.mrcs"
    )
    same_folder = read_particles(write_particles(tmp_path / "a" / "copy.star", t))
    assert same_folder.particles[star.IMAGE_NAME].tolist() == t.particles[star.IMAGE_NAME].tolist()


def _one_name(name: str, new_stack) -> str:
    """The per-name rule, written out independently of the vectorized code."""
    index, stack = parse_image_name(name)
    moved = new_stack(stack)
    if moved is None:
        return name
    return moved if index is None else f"{index:06d}@{moved}"


def test_stack_path_rewrites_of_many_names_equal_the_rule_for_one(tmp_path: Path):
    """Relocation and absolute paths, rewritten once per stack, give name by name what the
    per-name rule gives: indices of any width, single-image files, cryoSPARC's '>' prefix,
    absolute paths, spaces around names, repeated names."""
    old, new = tmp_path / "a" / "b", tmp_path / "c"
    names = pd.Series([
        "1@stacks/x.mrcs", "000002@stacks/x.mrcs", "1234567@../y.mrcs", "single.mrc",
        "000003@>J3/extract/z.mrc", ">J3/one.mrc", "7@/data/abs.mrcs", "/data/abs_single.mrc",
        " 000004@stacks/x.mrcs ", "1@stacks/x.mrcs",
    ])  # fmt: skip

    def relocated(stack):
        return None if stack.startswith("/") else os.path.relpath(old / stack, new)

    def absolute(stack):
        return stack if stack.startswith("/") else (old / stack).resolve().as_posix()

    moved = star.relocated_image_names(names, old, new).tolist()
    assert moved == [_one_name(n, relocated) for n in names]
    assert moved[0] == "000001@../a/b/stacks/x.mrcs" and moved[2] == "1234567@../a/y.mrcs"
    assert moved[4] == "000003@../a/b/J3/extract/z.mrc" and moved[6] == "7@/data/abs.mrcs"
    full = star.absolute_image_names(names, old).tolist()
    assert full == [_one_name(n, absolute) for n in names]
    assert full[6] == "000007@/data/abs.mrcs" and full[3] == (old / "single.mrc").as_posix()
    with pytest.raises(InputError, match="≥ 1"):
        star.relocated_image_names(pd.Series(["1@x.mrcs", "0@x.mrcs"]), old, new)
    with pytest.raises(InputError, match="particle row 2: image index before '@' is not an"):
        star.split_image_names(pd.Series(["1@x.mrcs", "1.5@x.mrcs"]))


# -- errors -----------------------------------------------------------------------------------


def test_missing_and_unparsable_files(tmp_path: Path):
    with pytest.raises(InputError) as err:
        read_particles(tmp_path / "none.star")
    assert "none.star" in str(err.value) and "not found" in str(err.value)
    bad = _write(tmp_path, "data_optics\n\nloop_\n_rlnOpticsGroup #1\n", "bad.star")
    bad.write_text(bad.read_text() + "\ndata_particles\n\nloop_\n_rlnA #1\n_rlnB #2\n1 2 3 4 5\n")
    with pytest.raises(InputError) as err:
        read_particles(bad)
    assert "bad.star" in str(err.value)


def test_missing_ctf_column_is_named(tmp_path: Path):
    text = RELION31.replace("_rlnDefocusV #7", "_rlnSomethingElse #7")
    t = read_particles(_write(tmp_path, text))
    with pytest.raises(InputError) as err:
        ctf_parameters(t)
    msg = str(err.value)
    assert "rlnDefocusV" in msg and "particles.star" in msg


def test_missing_cs_in_optics_is_named(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION31))
    t2 = ParticleTable(t.optics.drop(columns=["rlnSphericalAberration"]), t.particles, t.path)
    with pytest.raises(InputError) as err:
        ctf_parameters(t2)
    assert "rlnSphericalAberration" in str(err.value)


def test_unknown_optics_group_and_pixel_origins_without_pixel_size(tmp_path: Path):
    text = RELION31.replace("mic_002.mrc            2 ", "mic_002.mrc            5 ")
    with pytest.raises(InputError) as err:
        read_particles(_write(tmp_path, text))
    assert "rlnOpticsGroup" in str(err.value) and "row 3" in str(err.value)
    no_pixel = RELION30.replace("_rlnMagnification #11", "_rlnSomething #11")
    with pytest.raises(InputError) as err:
        read_particles(_write(tmp_path, no_pixel, "old.star"))
    assert "rlnImagePixelSize" in str(err.value) and "old.star" in str(err.value)


def test_non_finite_and_missing_pose_columns(tmp_path: Path):
    t = read_particles(_write(tmp_path, RELION31))
    particles = t.particles.copy()
    particles.loc[1, "rlnAngleTilt"] = np.nan
    with pytest.raises(InputError) as err:
        angles_deg(ParticleTable(t.optics, particles, t.path))
    assert "rlnAngleTilt" in str(err.value) and "row 2" in str(err.value)
    bare = ParticleTable(t.optics, t.particles.drop(columns=list(star.ORIGINS_A)), t.path)
    with pytest.raises(InputError) as err:
        shifts_A(bare)
    assert "rlnOriginXAngst" in str(err.value)
    np.testing.assert_array_equal(shifts_A(bare, missing_ok=True), np.zeros((3, 2)))
    with pytest.raises(InputError) as err:
        amplitudes(t, suffix="Missing")
    assert "deephemnmaAmplitudeNNMissing" in str(err.value)


def test_parse_image_name():
    assert parse_image_name("000123@stacks/a.mrcs") == (123, "stacks/a.mrcs")
    assert parse_image_name("single.mrc") == (None, "single.mrc")
    assert parse_image_name("12@>J1/x.mrc") == (12, "J1/x.mrc")
    for bad in ("0@a.mrcs", "x@a.mrcs", "3@"):
        with pytest.raises(InputError) as err:
            parse_image_name(bad)
        assert "rlnImageName" in str(err.value)
