"""``deephemnma explore``: the conformational-space explorer, a local web app."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("explore")
def explore_command(
    project: Path = typer.Argument(
        ..., help="Project directory (analyze/space.npz, analyze/groups.json, nma/modes.npz)."
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. Anything but 127.0.0.1/localhost/::1 requires the random "
        "access token printed at start in every request.",
    ),
    port: int = typer.Option(8765, "--port", help="TCP port (0: any free port)."),
    space: Path = typer.Option(
        None, "--space", help="Reduced-space file (default PROJECT/analyze/space.npz)."
    ),
    groups: Path = typer.Option(
        None,
        "--groups",
        help="Group file the page edits and reconstruct reads (default "
        "PROJECT/analyze/groups.json).",
    ),
    modes: Path = typer.Option(
        None, "--modes", help="Modes file for atomic models (default PROJECT/nma/modes.npz)."
    ),
    size: int = typer.Option(
        None, "--size", help="Box size in pixels passed to `reconstruct --size` (default: its own)."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level: warning, info, debug."),
) -> None:
    """Open the reduced conformational space in the browser: a WebGL scatter of the PC
    coordinates, lasso/box groups saved to the group file, centroid atomic models, background
    reconstructions with FSC, animations along a drawn path and RELION STAR export. Stop with
    Ctrl-C. Files are read and written only inside PROJECT."""
    from deephemnma.explore.app import create_app
    from deephemnma.explore.project import project_paths
    from deephemnma.explore.security import LOOPBACK_HOSTS, is_loopback, new_token
    from deephemnma.explore.server import bind, serve, url_of

    paths = project_paths(project, space=space, groups=groups, modes=modes)
    local = is_loopback(host)
    token = None if local else new_token()
    allowed = LOOPBACK_HOSTS if local else None
    application = create_app(paths, token=token, allowed_hosts=allowed, size=size)
    sock = bind(host, port)
    n = application.state.explorer.space.n_points
    _out.print(f"deephemnma explore: {paths.root} ({n:,} particles)", highlight=False)
    if token:
        _out.print(
            f"[bold yellow]listening on {host}: every request needs the access token[/]\n"
            f"token: {token}",
            highlight=False,
        )
    _out.print(
        f"open {url_of(sock, host, token)}   (Ctrl-C stops)", highlight=False, soft_wrap=True
    )
    serve(application, sock, log_level=log_level)
