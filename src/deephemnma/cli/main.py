"""The ``deephemnma`` command: registers each subcommand and turns input errors into clear
messages with a non-zero exit code instead of tracebacks."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.markup import escape

from deephemnma import __version__
from deephemnma.errors import InputError

app = typer.Typer(
    name="deephemnma",
    help=(
        "Continuous conformational heterogeneity from cryo-EM particle images (DeepHEMNMA). "
        "Lengths are in ångström (Å), angles in degrees, defocus positive for underfocus "
        "(RELION)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown: docstrings and help texts are rewrapped to the terminal instead of keeping
    # the source's line breaks.
    rich_markup_mode="markdown",
)

_err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"deephemnma {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """deephemnma: normal modes, HEMNMA alignment, deep learning, conformational space."""


def _register() -> None:
    # Each command lives in its own module; importing registers it on ``app``.
    from deephemnma.cli import commands  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; report :class:`InputError` without a traceback (exit 2),
    and a failure of the system under a command (disk full, permission denied, too many open
    files: ``OSError``) in one line too (exit 1; ``DEEPHEMNMA_TRACEBACK=1`` shows the
    traceback)."""
    _register()
    try:
        code = app(args=argv, standalone_mode=False)
    except InputError as exc:
        # soft_wrap: a long path stays on one line, copyable and greppable; escape: a path
        # or field name with brackets is not rich markup.
        _err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:
        if os.environ.get("DEEPHEMNMA_TRACEBACK"):
            raise
        _err.print(f"[bold red]error:[/] {escape(_os_error_text(exc))}", highlight=False,
                   soft_wrap=True)  # fmt: skip
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _err.print("aborted")
        return 130
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130
    except Exception as exc:
        # Usage errors (unknown option, bad value) are click exceptions; typer vendors its
        # own click, so recognize them by their interface rather than by class.
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            exc.show()
            return exc.exit_code
        raise
    return code if isinstance(code, int) else 0


def _os_error_text(exc: OSError) -> str:
    """``"<file>: <reason>"`` as the system says it (``No space left on device``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    files = [f for f in (exc.filename, getattr(exc, "filename2", None)) if f is not None]
    where = " → ".join(str(f) for f in files)
    return f"{where}: {reason}" if where else reason
