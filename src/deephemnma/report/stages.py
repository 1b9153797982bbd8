"""The pipeline stages up to prediction, one function each: read that stage's folder of a
project into a :class:`~deephemnma.report.model.Section`.

Every function takes the project folder and the :class:`~deephemnma.report.sections.
ReportOptions`, and returns a section whose ``ran`` is False when the stage folder is absent
or empty. Files are read with :mod:`deephemnma.report.files`, so a missing or malformed file
becomes a note, never an exception. The paths read are listed in docs/report.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deephemnma.report import figures
from deephemnma.report.files import (
    as_float,
    count_star_rows,
    read_csv_rows,
    read_dict,
    relative,
)
from deephemnma.report.format import DASH, count, number, percent, span
from deephemnma.report.model import Facts, Gallery, Image, Section, Table, Text
from deephemnma.report.sections import ReportOptions, add, gallery, setting, start_section

# --------------------------------------------------------------------------------------------
# Normal modes


def _modes_file(folder: Path) -> Path | None:
    if (folder / "modes.npz").is_file():
        return folder / "modes.npz"
    found = sorted(folder.glob("*.npz"))
    return found[0] if found else None


def _used_modes(folder: Path, available) -> list[int]:
    """The modes the pipeline analyses (``config.json``: ``nma.modes``), or none known."""
    from deephemnma.nma.modes import parse_mode_numbers

    text = setting(folder, "nma", "modes")
    if not text:
        return []
    try:
        return [int(m) for m in parse_mode_numbers(str(text), available=available)]
    except Exception:  # noqa: BLE001 - an unusable setting just marks nothing
        return []


def nma_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/nma/: modes.npz (eigenvalues, collectivity), its PNG figures and GIF movies;
    ``config.json`` ``nma.modes`` marks the modes used."""
    folder = project / "nma"
    section = start_section(project, "nma", "Normal modes", folder)
    if not section.ran:
        return section
    path = _modes_file(folder)
    if path is None:
        section.notes.append(f"{section.folder}/ holds no modes file (.npz)")
        return section
    from deephemnma.nma.analysis import collectivity
    from deephemnma.nma.modes import load_modes

    try:
        modes = load_modes(path)
    except Exception as exc:  # noqa: BLE001 - a bad file is a note, not a crash
        section.notes.append(f"{relative(path, project)} could not be read: {exc}")
        return section
    numbers = [int(m) for m in modes.mode_numbers if m > 6] or [int(m) for m in modes.mode_numbers]
    used = _used_modes(folder, modes.mode_numbers)
    shown = modes.select(numbers)
    kappa = collectivity(shown.vectors)
    eigen = np.asarray(shown.eigenvalues, dtype=np.float64)
    relative_freq = np.sqrt(np.clip(eigen / eigen[0], 0, None)) if eigen[0] > 0 else None
    p = modes.parameters or {}
    n_atoms = shown.vectors.shape[1]
    facts = [
        ("modes file", relative(path, project)),
        ("reference", Path(str(p.get("source", DASH))).name),
        ("nodes (atoms or pseudoatoms)", count(n_atoms)),
        ("selection", str(p.get("selection", DASH))),
        ("method", str(p.get("method", DASH)).upper()),
        ("spring cut-off (Å)", number(p.get("cutoff_A"), 1)),
        ("modes in file", span(modes.mode_numbers)),
    ]
    if p.get("method") == "rtb" and p.get("block_residues") is not None:
        facts.append(("RTB block (residues)", str(p["block_residues"])))
    if used:
        facts.append(("modes analysed", span(used)))
    section.blocks.append(Facts(tuple(facts)))
    rows = []
    for k, m in enumerate(numbers):
        row = [str(m), f"{eigen[k]:.4g}"]
        row.append(DASH if relative_freq is None else number(relative_freq[k], 3))
        row.append(number(kappa[k], 3))
        if used:
            row.append("✓" if m in used else "")
        rows.append(tuple(row))
    header = ("mode", "eigenvalue (γ)", f"frequency ω / ω{numbers[0]}", "collectivity κ")
    section.blocks.append(
        Table(
            header=header + (("analysed",) if used else ()),
            rows=tuple(rows),
            caption="Flexible modes (1–6 are rigid-body motions). Eigenvalues in units of the "
            "spring constant γ (energy/Å²); a mode's frequency is proportional to the square "
            "root of its eigenvalue; collectivity κ ∈ [1/N, 1] is the fraction of nodes that "
            "move appreciably (Brüschweiler 1995).",
        )
    )
    what = "Eigenvalues and collectivity of the modes analysed (and their overlap with a target "
    what += "where computed), written by the NMA step"
    pngs = [(png, f"{what} ({png.name}).") for png in sorted(folder.glob("*.png"))]
    pictures = gallery(section, project, pngs)
    if pictures is None:
        drawn = figures.modes_figure(numbers, eigen, kappa)
        caption = "Eigenvalue (log scale) and collectivity of each flexible mode."
        pictures = Gallery((Image(drawn, "image/png", caption, "drawn by the report", True),))
    section.blocks.append(pictures)
    movie_modes = used + [m for m in numbers if m not in used]
    section.blocks.extend(_mode_movies(section, project, folder, shown, movie_modes, options))
    section.headline = (
        f"{len(numbers)} flexible modes of {count(n_atoms)} nodes"
        + (f", modes {span(used)} analysed" if used else "")
        + f"; collectivity {number(kappa.min(), 2)}–{number(kappa.max(), 2)}"
    )
    return section


def _mode_movies(section, project, folder, modes, numbers, options: ReportOptions) -> list:
    gifs = sorted(folder.glob("*.gif")) + sorted(folder.glob("*/*.gif"))
    if gifs:
        shown = gallery(
            section, project, [(g, f"Mode animation {relative(g, folder)}.") for g in gifs]
        )
        return [Text("Mode animations."), shown] if shown else []
    if options.mode_movies <= 0:
        return []
    movies = []
    for m in numbers[: options.mode_movies]:
        try:
            movies.append(
                figures.mode_movie(
                    modes, m, options.movie_rms_A, options.movie_frames, options.movie_size
                )
            )
        except Exception as exc:  # noqa: BLE001
            section.notes.append(f"mode {m} could not be animated: {exc}")
            break
    if not movies:
        return []
    text = (
        f"Animations of modes {span(numbers[: len(movies)])}, rendered by the report from the "
        "modes file (atoms as Gaussian densities, one gray scale per movie)."
    )
    return [Text(text), Gallery(tuple(movies))]


# --------------------------------------------------------------------------------------------
# Preprocessing


def preprocess_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/preprocess/: particles.star (phase-flipped, downsampled), truth.star."""
    folder = project / "preprocess"
    section = start_section(project, "preprocess", "Preprocessing", folder)
    if not section.ran:
        return section
    star = folder / "particles.star"
    n = count_star_rows(star, section.notes, project) if star.is_file() else None
    if not star.is_file():
        section.notes.append(f"{relative(star, project)} is missing")
    size = setting(folder, "preprocess", "size")
    flip = setting(folder, "preprocess", "phase_flip")
    facts = [
        ("particles", count(n)),
        ("box after downsampling (px)", count(size)),
        ("CTF phase flip", DASH if flip is None else ("yes" if flip else "no")),
        ("ground truth (truth.star)", "yes" if (folder / "truth.star").is_file() else "no"),
    ]
    section.blocks.append(Facts(tuple(facts)))
    section.headline = f"{count(n)} particles" + (f" at {size}² px" if size else "")
    return section


# --------------------------------------------------------------------------------------------
# Stage 1


def stage1_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/stage1/: summary.json, summary.png (``deephemnma align``)."""
    folder = project / "stage1"
    section = start_section(project, "stage1", "Stage 1: HEMNMA alignment", folder)
    if not section.ran:
        return section
    summary = read_dict(folder / "summary.json", section.notes, project, required=True)
    config = read_dict(folder / "config.json", [], project) or {}
    if summary is not None:
        n = summary.get("particles")
        facts = [
            ("particles aligned", count(n)),
            ("mean score (NCC)", number(summary.get("score_mean"), 3)),
            ("median score (NCC)", number(summary.get("score_median"), 3)),
        ]
        if config.get("mode_numbers"):
            facts.append(("modes", span(config["mode_numbers"])))
        seconds = section.seconds
        if seconds is not None and as_float(n):
            facts.append(("time per particle (s)", number(seconds / float(n), 3)))
        section.blocks.append(Facts(tuple(facts)))
        means = summary.get("amplitude_mean") or {}
        stds = summary.get("amplitude_std") or {}
        if isinstance(means, dict) and means:
            section.blocks.append(
                Table(
                    header=("mode", "mean amplitude", "std amplitude"),
                    rows=tuple(
                        (str(m), number(v, 1), number(stds.get(m), 1)) for m, v in means.items()
                    ),
                    caption="Normal-mode amplitudes found by Stage 1 (dimensionless; atom i "
                    "moves by q·vᵢ Å with unit-norm 3N mode vectors).",
                )
            )
        section.headline = (
            f"{count(n)} particles, mean score {number(summary.get('score_mean'), 3)}"
        )
    add(
        section,
        gallery(
            section,
            project,
            [
                (
                    folder / "summary.png",
                    "Distributions of the Stage-1 amplitudes, Euler angles (°), shifts (Å) "
                    "and scores (normalized cross-correlation).",
                )
            ],
            wide=("summary.png",),
        ),
    )
    return section


# --------------------------------------------------------------------------------------------
# Outlier filter


def filter_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/filter/: the kept particles (*.star) and the figure beside each (*.png)."""
    folder = project / "filter"
    section = start_section(project, "filter", "Outlier filter", folder)
    if not section.ran:
        return section
    stars = sorted(folder.glob("*.star"))
    if not stars:
        section.notes.append(f"{section.folder}/ holds no STAR file")
    stage1 = read_dict(project / "stage1" / "summary.json", [], project) or {}
    total = as_float(stage1.get("particles"))
    rows, items = [], []
    for star in stars:
        n = count_star_rows(star, section.notes, project)
        rows.append(
            (
                relative(star, project),
                count(n),
                DASH if n is None or not total else percent(n / total),
            )
        )
        items.append(
            (
                star.with_suffix(".png"),
                f"{star.name}: kept (blue) and removed (red) particles in the plane of the "
                "first two modes, and the Mahalanobis distances of the amplitudes.",
            )
        )
        if n is not None and not section.headline:
            section.headline = f"kept {count(n)}" + (f" of {count(total)}" if total else "")
    limit = setting(folder, "filter", "mahalanobis")
    if limit is not None:
        section.blocks.append(Facts((("Mahalanobis limit", number(limit, 2) if limit else "off"),)))
    if rows:
        section.blocks.append(
            Table(
                header=("kept particles", "rows", "of Stage 1"),
                rows=tuple(rows),
                caption="Particles kept by the outlier filter (paper: Mahalanobis distance of "
                "the amplitudes ≤ 3.2).",
            )
        )
    add(section, gallery(section, project, items, wide=tuple(p.name for p, _ in items)))
    return section


# --------------------------------------------------------------------------------------------
# Stage 2: training and prediction


_HISTORY_COLUMNS = (
    ("epoch", "epoch", 0),
    ("train_total", "train loss", 4),
    ("val_total", "validation loss", 4),
    ("val_amp_mae", "amplitude MAE", 2),
    ("val_angle_deg", "angle error (°)", 2),
    ("val_shift_mae_A", "shift MAE (Å)", 3),
    ("train_img_per_s", "images/s", 0),
)


def train_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/train/: config.json (run record), history.csv, curves.png."""
    folder = project / "train"
    section = start_section(project, "train", "Stage 2: network training", folder)
    if not section.ran:
        return section
    record = read_dict(folder / "config.json", section.notes, project) or {}
    result = record.get("result") or {}
    best = result.get("best") or {}
    splits = record.get("splits") or {}
    facts = [
        ("device", str(record.get("device", DASH)) + (", bf16" if record.get("bf16") else "")),
        ("heads", ", ".join(record.get("heads") or []) or DASH),
        ("modes", span(record.get("mode_numbers") or [])),
        ("image size (px)", count(record.get("image_size"))),
        ("pixel size (Å)", number(record.get("pixel_size_A"), 3)),
        (
            "images train / validation / test",
            " / ".join(count(splits.get(k)) for k in ("train", "val", "test")),
        ),
        ("epochs done", count(result.get("epochs_done"))),
        (
            "best epoch (validation loss)",
            f"{best.get('epoch', DASH)} ({number(best.get('val_loss'), 4)})",
        ),
        ("stopped early", "yes" if result.get("stopped_early") else "no"),
    ]
    timings = record.get("timings") or {}
    if section.seconds is None and as_float(timings.get("this_run_s")) is not None:
        section.seconds = float(timings["this_run_s"])
    if record:
        section.blocks.append(Facts(tuple(facts)))
    history = read_csv_rows(folder / "history.csv", section.notes, project)
    if history:
        picked = [history[-1]]
        best_epoch = str(best.get("epoch"))
        for row in history:
            if row.get("epoch") == best_epoch and row is not history[-1]:
                picked.insert(0, row)
        columns = [c for c in _HISTORY_COLUMNS if c[0] in history[0]]
        section.blocks.append(
            Table(
                header=tuple(c[1] for c in columns),
                rows=tuple(tuple(number(r.get(k), d) for k, _, d in columns) for r in picked),
                caption="Best (lowest validation loss) and last epoch. Validation errors "
                "against the labels: amplitude MAE (dimensionless), angular error (°), "
                "shift MAE (Å).",
            )
        )
        last = history[-1]
        parts = [f"{len(history)} epochs"]
        if "val_amp_mae" in last:
            parts.append(f"val. amplitude MAE {number(last['val_amp_mae'], 2)}")
        if "val_angle_deg" in last:
            parts.append(f"angle {number(last['val_angle_deg'], 2)}°")
        section.headline = ", ".join(parts)
    caption = "Training and validation loss per epoch (log scale) and validation errors."
    shown = gallery(section, project, [(folder / "curves.png", caption)], ("curves.png",))
    if shown is None and history:
        data = figures.history_figure(history)
        if data is not None:
            shown = Gallery((Image(data, "image/png", caption, "drawn from history.csv", True),))
    add(section, shown)
    return section


def predict_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/predict/: particles.star, particles_network.star, particles.star.refine/
    summary.json (hybrid refinement)."""
    folder = project / "predict"
    section = start_section(project, "predict", "Stage 2: prediction", folder)
    if not section.ran:
        return section
    star = folder / "particles.star"
    if not star.is_file():
        stars = sorted(folder.glob("*.star"))
        star = stars[0] if stars else None
    n = None if star is None else count_star_rows(star, section.notes, project)
    if star is None:
        section.notes.append(f"{section.folder}/ holds no STAR file")
    network = folder / "particles_network.star"
    facts = [
        ("predictions", DASH if star is None else relative(star, project)),
        ("particles", count(n)),
        ("hybrid refinement", "yes" if network.is_file() else "no"),
    ]
    section.blocks.append(Facts(tuple(facts)))
    section.headline = f"{count(n)} particles" if n is not None else ""
    summaries = sorted(folder.glob("*.refine/summary.json"))
    for path in summaries[:1]:
        refine = read_dict(path, section.notes, project)
        if refine is None:
            continue
        section.blocks.append(
            Facts(
                (
                    ("refined particles", count(refine.get("particles"))),
                    (
                        "mean score before refinement (NCC)",
                        number(refine.get("start_score_mean"), 3),
                    ),
                    ("mean score after refinement (NCC)", number(refine.get("score_mean"), 3)),
                    ("score never lower", "yes" if refine.get("score_never_lower") else "no"),
                )
            )
        )
        methods = refine.get("methods") or {}
        if isinstance(methods, dict) and methods:
            section.blocks.append(
                Table(
                    header=("refinement outcome", "particles"),
                    rows=tuple((str(k), count(v)) for k, v in methods.items()),
                    caption=f"How each prediction was refined ({relative(path, project)}).",
                )
            )
        section.headline += ", refined"
    pngs = [(p, f"Figure of the prediction step ({p.name}).") for p in sorted(folder.glob("*.png"))]
    add(section, gallery(section, project, pngs))
    return section


# --------------------------------------------------------------------------------------------
