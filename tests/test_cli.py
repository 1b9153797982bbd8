"""The command line: version, help with units, clean errors without tracebacks."""

import subprocess
import sys

import pytest

from deephemnma import __version__
from deephemnma.cli.main import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "command,units",
    [
        ("simulate", ["Å", "kV", "mm", "°", "pixels"]),
        ("preprocess", ["pixels", "Å"]),
        ("nma", ["Å"]),
    ],
)
def test_help_states_units(capsys, command, units):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    for unit in units:
        assert unit in text, (command, unit)


def test_input_error_is_reported_without_traceback(tmp_path):
    missing = tmp_path / "missing.star"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deephemnma",
            "preprocess",
            str(missing),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing.star" in result.stderr
    assert not (tmp_path / "out" / "particles.star").exists()


def test_error_message_is_one_unwrapped_line_with_brackets_kept(tmp_path, capsys):
    # A long path must not be wrapped (users copy it; tests grep it) and a path with
    # brackets is text, not rich markup.
    missing = tmp_path / ("x" * 120) / "[run 3]" / "missing.star"
    assert main(["preprocess", str(missing), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert err.count("\n") == 1


def test_unknown_option_is_a_usage_error():
    assert main(["simulate", "--no-such-option"]) == 2
