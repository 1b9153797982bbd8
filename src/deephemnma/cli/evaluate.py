"""``deephemnma evaluate``: the paper's Tables 1–4 metrics, scatter plots and the helix figure."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("evaluate")
def evaluate_command(
    predicted: Path = typer.Argument(
        ..., help="RELION STAR with the estimates (poses in °/Å, deephemnmaAmplitudeNN)."
    ),
    truth: Path = typer.Option(
        ..., "--truth", help="RELION STAR with the ground truth (e.g. simulate's particles.star)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder: evaluation.json, table.txt, *.png."
    ),
    modes: Path = typer.Option(
        None,
        "--modes",
        help="Modes file (.npz, reference + modes) for the RMSD metrics in Å "
        "(amplitudes and angles); without it only the shift RMSD is reported.",
    ),
    against: Path = typer.Option(
        None,
        "--against",
        help="A second estimate (e.g. Stage-1 HEMNMA): adds the rows 'predicted vs "
        "against' and 'against vs truth' (paper Table 1).",
    ),
    predicted_suffix: str = typer.Option(
        "", help="Column suffix of the estimates (deephemnmaAmplitude07 + SUFFIX)."
    ),
    truth_suffix: str = typer.Option("", help="Column suffix of the truth amplitudes."),
    gross_threshold: float = typer.Option(
        10.0, help="Angular error in degrees above which an orientation is a gross failure."
    ),
    paper: str = typer.Option(
        "table3",
        help="Paper rows shown for comparison: table1 (small test, 2,000 images), table3 "
        "(large test, 50,000), all, none.",
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG figures."),
) -> None:
    """Score estimates against ground truth with the paper's metrics (§3.1.1): amplitude MAE
    per mode, angular error in degrees (axes metric and geodesic), shift MAE in Å, and the RMSD
    in Å of the reference displaced with one parameter type at a time. Rows are matched by
    rlnImageName, or by order when no name matches and the counts agree."""
    from deephemnma.errors import InputError
    from deephemnma.evaluate import PAPER_ROWS, compare, write_evaluation_folder
    from deephemnma.io.star import read_particles

    choices = {
        "table1": ["table1", "table1_hemnma", "table1_hemnma_truth"],
        "table3": ["table3"],
        "all": list(PAPER_ROWS),
        "none": [],
    }
    if paper not in choices:
        raise InputError(
            "unknown paper rows", field="--paper", expected=" | ".join(choices), found=paper
        )
    pred_table = read_particles(predicted)
    true_table = read_particles(truth)
    mode_set = None
    if modes is not None:
        from deephemnma.nma.modes import load_modes

        mode_set = load_modes(modes)

    comparisons = [
        compare(
            pred_table, true_table, mode_set, predicted_suffix, truth_suffix, "predicted vs truth"
        )
    ]
    if against is not None:
        other = read_particles(against)
        comparisons.append(
            compare(pred_table, other, mode_set, predicted_suffix, "", "predicted vs against")
        )
        comparisons.append(
            compare(other, true_table, mode_set, "", truth_suffix, "against vs truth")
        )
    record = {
        "predicted": str(predicted),
        "truth": str(truth),
        "against": None if against is None else str(against),
        "modes": None if modes is None else str(modes),
    }
    table = write_evaluation_folder(
        comparisons,
        out,
        f"evaluate {predicted.name} (truth {truth.name})",
        [PAPER_ROWS[k] for k in choices[paper]],
        ["scatter.png", "scatter_against.png", "scatter_against_truth.png"],
        record,
        gross_threshold,
        plots,
    )
    # The table is wide; do not squeeze it into 80 columns when the output is not a terminal.
    Console(width=max(_out.width, 190)).print(table)
    _out.print(f"wrote {out / 'evaluation.json'}, table.txt" + (", figures" if plots else ""))
