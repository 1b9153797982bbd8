# ruff: noqa: W291, W293  (fixtures reproduce RELION lines with trailing spaces)
"""The STAR block reader (deephemnma.io.star_blocks) gives what ``starfile.read`` gives, on the
layouts and corner cases of RELION, pyem and hand-edited files, and refuses ragged loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from deephemnma.errors import InputError
from deephemnma.io.star import _STRING_LABELS, read_particles, write_particles
from deephemnma.io.star_blocks import read_star_blocks

CASES = {
    "relion31": """
# version 30001

data_optics

loop_ 
_rlnOpticsGroupName #1 
_rlnOpticsGroup #2 
_rlnImagePixelSize #3 
opticsGroup1            1     1.770000 
opticsGroup2            2     1.770000 
 

# version 30001

data_particles

loop_ 
_rlnImageName #1 
_rlnMicrographName #2 
_rlnDefocusU #3 
_rlnOpticsGroup #4 
000001@Extract/job012/mics/a.mrcs MotionCorr/0001.mrc 10000.5 1 
000002@Extract/job012/mics/a.mrcs MotionCorr/0002.mrc  9000.0 2 
""",
    # Key-value block, comments between rows, NaN spellings, quoted values of both kinds, a
    # micrograph "name" that looks like a number, CRLF line ends, a block after the loop.
    "mixed": (
        "data_general\n\n_rlnFinalResolution 3.5\n_rlnMaskName 'my mask.mrc'\n"
        "_rlnOpticsGroupName 7\n_rlnNrClasses 4\n\n"
        "data_particles\nloop_\n_rlnImageName #1\n_rlnMicrographName #2\n_rlnAngleRot #3\n"
        "_rlnClassNumber #4\n_rlnGroupName #5\n"
        "1@a.mrcs 0001 1.5 1 'group one'\r\n"
        "# a comment line\n"
        '2@a.mrcs 0002 nan 2 "group two"\r\n'
        "3@a.mrcs 0003 <NA> 3 g3\n"
        "\n"
        "data_model\nloop_\n_rlnReferenceImage #1\n_rlnClassDistribution #2\n1@c.mrcs 0.25\n"
    ),
    "empty_loop": "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnImageSize #2\n\n"
    "data_particles\nloop_\n_rlnImageName #1\n1@a.mrcs\n",
    "no_trailing_newline": "data_particles\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n1@a.mrcs 3",
    "empty_strings": "data_\nloop_\n_rlnImageName #1\n_rlnComment #2\n_rlnAngleRot #3\n"
    "1@a.mrcs \"\" 1.5\n2@a.mrcs '' 2.5\n",  # a column of empty strings stays text
    # "data_" inside values is no block head; one after indentation is.
    "data_in_values": "data_optics\nloop_\n_rlnOpticsGroup #1\n1\n\n  data_particles\nloop_\n"
    "_rlnImageName #1\n_rlnMicrographName #2\n1@data_stacks/a.mrcs data_1.mrc\n"
    "2@x/data_b.mrcs mics/data_data_2.mrc\n",
}


def _assert_same(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for name, block in theirs.items():
        if isinstance(block, pd.DataFrame):
            pd.testing.assert_frame_equal(ours[name], block)
        else:
            assert ours[name] == block


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_blocks_as_starfile(case, tmp_path: Path):
    path = tmp_path / f"{case}.star"
    path.write_bytes(CASES[case].encode())
    theirs = starfile.read(path, always_dict=True, parse_as_string=_STRING_LABELS)
    _assert_same(read_star_blocks(path, _STRING_LABELS), theirs)


def test_values_of_the_mixed_case(tmp_path: Path):
    """What the comparison above takes on trust, checked by hand."""
    path = tmp_path / "m.star"
    path.write_bytes(CASES["mixed"].encode())
    blocks = read_star_blocks(path, _STRING_LABELS)
    assert blocks["general"] == {
        "rlnFinalResolution": 3.5,
        "rlnMaskName": "my mask.mrc",
        "rlnOpticsGroupName": "7",  # a string label stays text
        "rlnNrClasses": 4,
    }
    p = blocks["particles"]
    assert list(p["rlnMicrographName"]) == ["0001", "0002", "0003"]
    assert list(p["rlnGroupName"]) == ["group one", "group two", "g3"]
    assert p["rlnAngleRot"].iloc[0] == 1.5 and p["rlnAngleRot"].iloc[1:].isna().all()
    assert p["rlnClassNumber"].dtype == np.int64
    assert blocks["model"]["rlnClassDistribution"].tolist() == [0.25]


def test_written_particles_read_back(tmp_path: Path):
    """Our writer's output, many rows (the C parser reads in chunks), against starfile."""
    rng = np.random.default_rng(0)
    n = 50_000
    path = tmp_path / "in.star"
    path.write_text(CASES["relion31"])
    table = read_particles(path, fill_image_size=False)
    rows = table.particles.iloc[np.arange(n) % 2].reset_index(drop=True)
    rows["rlnAngleRot"] = rng.uniform(-180, 180, n)
    rows.loc[7, "rlnAngleRot"] = np.nan
    out = write_particles(tmp_path / "out.star", table.__class__(table.optics, rows, path))
    theirs = starfile.read(out, always_dict=True, parse_as_string=_STRING_LABELS)
    ours = read_star_blocks(out, _STRING_LABELS)
    _assert_same(ours, theirs)
    np.testing.assert_array_equal(ours["particles"]["rlnAngleRot"], rows["rlnAngleRot"])


def test_ragged_loop_is_an_input_error(tmp_path: Path):
    path = tmp_path / "ragged.star"
    path.write_text("data_particles\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n1@a.mrcs 3 4\n")
    with pytest.raises(ValueError, match="2 labels"):
        read_star_blocks(path)
    with pytest.raises(InputError) as err:
        read_particles(path)
    assert "ragged.star" in str(err.value)


def test_empty_file_has_no_blocks(tmp_path: Path):
    path = tmp_path / "empty.star"
    path.write_text("")
    assert read_star_blocks(path) == {}
