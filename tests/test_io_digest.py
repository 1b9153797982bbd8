"""Input fingerprints (deephemnma.io.digest): the bytes' SHA-256, and a clear error."""

import hashlib

import pytest

from deephemnma.errors import InputError
from deephemnma.io.digest import changed_files, file_sha256, files_sha256


def test_fingerprints_are_the_files_sha256(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data[:-1] + b"x")
    assert file_sha256(tmp_path / "a") == hashlib.sha256(data).hexdigest()
    digests = files_sha256({"labels": tmp_path / "a", "particles": None, "modes": tmp_path / "b"})
    assert list(digests) == ["labels", "modes"]
    assert changed_files(digests, {**digests, "modes": file_sha256(tmp_path / "a")}) == ["modes"]
    assert changed_files(digests, {"labels": digests["labels"]}) == ["modes"]


def test_an_unreadable_file_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="cannot read the reference file") as err:
        files_sha256({"reference": tmp_path / "missing.pdb"})
    assert "missing.pdb" in str(err.value)
