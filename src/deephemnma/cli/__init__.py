"""Command-line interface: one small Typer module per command, thin over library functions."""
