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


def test_system_errors_are_one_line_with_file_and_reason(tmp_path, capsys, monkeypatch):
    """A failure of the system under a command (here an output folder below a file; disk full
    and permission denied alike) is reported as '<file>: <reason>' with exit code 1, not a
    traceback; DEEPHEMNMA_TRACEBACK=1 shows the traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["simulate", "-n", "2", "--image-size", "32", "-o", str(blocker / "out"), "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{blocker / 'out'}: Not a directory" in err and "Traceback" not in err
    monkeypatch.setenv("DEEPHEMNMA_TRACEBACK", "1")
    with pytest.raises(NotADirectoryError):
        main(args)


def test_os_error_text_names_the_files_and_the_reason():
    import errno

    from deephemnma.cli.main import _os_error_text

    full = OSError(errno.ENOSPC, "No space left on device", "/data/run/pred.star")
    assert _os_error_text(full) == "/data/run/pred.star: No space left on device"
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "/tmp/a", None, "/data/b")
    assert _os_error_text(moved) == "/tmp/a → /data/b: Invalid cross-device link"
    assert _os_error_text(OSError("plain")) == "plain"
