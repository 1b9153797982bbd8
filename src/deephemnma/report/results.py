"""Stage 3 and the evaluation: the conformational space (analyze), the reconstructions and
the accuracy against ground truth, one section function each (as :mod:`.stages`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deephemnma.report import figures
from deephemnma.report.files import (
    as_float,
    read_csv_rows,
    read_dict,
    read_json,
    relative,
    step_record,
)
from deephemnma.report.format import DASH, count, number, percent, span
from deephemnma.report.model import Facts, Gallery, Image, Section, Table, Text
from deephemnma.report.sections import ReportOptions, add, gallery, start_section

# Stage 3: analysis


def analyze_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/analyze/: summary.json, explained_variance.json, groups, figures, GIFs, models."""
    folder = project / "analyze"
    section = start_section(project, "analyze", "Stage 3: conformational space", folder)
    if not section.ran:
        return section
    summary = read_dict(folder / "summary.json", section.notes, project, required=True) or {}
    config = read_dict(folder / "config.json", [], project) or {}
    settings = config.get("settings") or {}
    if summary:
        sources = summary.get("sources") or {}
        facts = [
            ("particles", count(summary.get("n_particles"))),
            ("sources", ", ".join(f"{k} {count(v)}" for k, v in sources.items()) or DASH),
            ("modes", span(summary.get("mode_numbers") or [])),
            ("principal components kept", count(summary.get("n_components"))),
            ("ground truth", "yes" if summary.get("has_truth") else "no"),
        ]
        section.blocks.append(Facts(tuple(facts)))
        seconds = (summary.get("seconds") or {}).get("total")
        if section.seconds is None:
            section.seconds = as_float(seconds)
        section.notes += [f"analyze: {note}" for note in summary.get("notes") or []]
    explained = read_dict(folder / "explained_variance.json", section.notes, project) or {}
    ratios = explained.get("explained_variance_ratio") or summary.get("explained_variance_ratio")
    if ratios:
        cumulative = explained.get("cumulative") or list(np.cumsum(ratios))
        stds = explained.get("pc_std") or [None] * len(ratios)
        section.blocks.append(
            Table(
                header=("PC", "explained variance", "cumulative", "standard deviation"),
                rows=tuple(
                    (f"PC{k + 1}", percent(r), percent(c), number(s, 1))
                    for k, (r, c, s) in enumerate(zip(ratios, cumulative, stds, strict=False))
                ),
                caption="PCA of the normal-mode amplitudes (centered, not scaled): variance "
                "along each principal axis as a fraction of the total, and its standard "
                "deviation in amplitude units.",
            )
        )
        n = count(summary.get("n_particles"))
        section.headline = f"{n} particles; PC1 holds {percent(ratios[0], 0)} of the variance"
    groups = summary.get("groups") or {}
    if isinstance(groups, dict) and groups:
        section.blocks.append(_groups_table(project, groups))
        section.headline += f", {len(groups)} groups"
    extent = settings.get("extent_std", 2.0)
    add(
        section,
        gallery(
            section,
            project,
            [
                (folder / "explained_variance.png", "Explained variance per principal component."),
                (
                    folder / "density.png",
                    "Density of particles in the planes of the first principal components "
                    "(2D histograms, logarithmic color scale).",
                ),
                (
                    folder / "scatter3d.png",
                    "The first three principal components (random subset, colored by local "
                    "density).",
                ),
                (folder / "groups.png", "Groups over the density of all particles (PC1–PC2)."),
                (
                    folder / "trajectories.png",
                    f"Trajectories along the principal axes (±{extent:g} standard deviations) "
                    "and paths, in PC space.",
                ),
            ],
            wide=("density.png",),
        ),
    )
    gifs = sorted((folder / "trajectories").glob("*.gif"))
    movies = []
    for gif in gifs:
        name = gif.stem
        what = f"along the path '{name}'"
        if name.startswith("pc"):
            what = f"along {name.upper()}, ±{extent:g} standard deviations"
        movies.append((gif, f"The reference deformed {what}; views along z and x."))
    shown = gallery(section, project, movies)
    if shown is not None:
        section.blocks.append(Text("Movies of the motions along the principal axes."))
        section.blocks.append(shown)
    models = sorted((folder / "models").glob("*.pdb")) + sorted((folder / "models").glob("*.cif"))
    trajectories = sorted((folder / "trajectories").glob("*.pdb")) + sorted(
        (folder / "trajectories").glob("*.cif")
    )
    if models or trajectories:
        text = "Atomic models (open in ChimeraX, PyMOL or VMD): "
        text += ", ".join(relative(p, project) for p in models + trajectories) + "."
        section.blocks.append(Text(text))
    return section


def _groups_table(project: Path, groups: dict) -> Table:
    from deephemnma.groups import folder_name

    rows = []
    for name, group in groups.items():
        group = group if isinstance(group, dict) else {}
        resolution = DASH
        try:
            folder = project / "reconstruct" / folder_name(str(name))
        except Exception:  # noqa: BLE001 - a name the group module rejects has no folder
            folder = None
        if folder is not None:
            rec = read_dict(folder / "summary.json", [], project) or {}
            if rec.get("resolution_fsc0143_A") is not None:
                resolution = number(rec["resolution_fsc0143_A"], 2)
        rows.append((str(name), count(group.get("n")), str(group.get("source", DASH)), resolution))
    return Table(
        header=("group", "particles", "made by", "reconstruction, FSC 0.143 (Å)"),
        rows=tuple(rows),
        caption="Groups of particles (analyze/groups.json); resolution of the group's "
        "reconstruction where one exists.",
    )


# --------------------------------------------------------------------------------------------
# Reconstructions


_RESOLUTIONS = (
    ("resolution_fsc0143_A", "fsc0143_at_nyquist", "FSC 0.143 (Å)"),
    ("resolution_fsc05_A", "fsc05_at_nyquist", "FSC 0.5 (Å)"),
    ("resolution_model_fsc0143_A", "model_fsc0143_at_nyquist", "vs model, FSC 0.143 (Å)"),
    ("resolution_model_fsc05_A", "model_fsc05_at_nyquist", "vs model, FSC 0.5 (Å)"),
)
"""(summary key, its at-Nyquist flag, column) of the resolutions in a group's summary.json."""


def _resolution(record: dict, key: str, flag: str) -> str:
    text = number(record.get(key), 2)
    return text + "*" if text != DASH and record.get(flag) else text


def _group_folders(folder: Path) -> list[Path]:
    return [
        d
        for d in sorted(folder.iterdir())
        if d.is_dir()
        and not d.name.startswith(".")
        and any((d / n).exists() for n in ("summary.json", "map.mrc", "fsc.csv"))
    ]


def reconstruct_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/reconstruct/: summary.json (run record) and one folder per group with
    summary.json, fsc.csv, fsc.png, slices.png and map.mrc (docs/reconstruct.md)."""
    folder = project / "reconstruct"
    section = start_section(project, "reconstruct", "Reconstructions", folder)
    if not section.ran:
        return section
    top = read_dict(folder / "summary.json", section.notes, project) or {}
    if section.seconds is None:
        section.seconds = as_float(top.get("total_s"))
    skipped = top.get("skipped") or []
    settings = top.get("settings") if isinstance(top.get("settings"), dict) else {}
    if top:
        facts = [
            ("CTF correction", str(top.get("ctf_mode", DASH))),
            ("map box (voxels)", str(settings.get("box") or "images' box")),
            ("fewest particles per group", count(settings.get("min_particles"))),
            ("groups skipped", str(len(skipped)) if isinstance(skipped, list) else DASH),
        ]
        section.blocks.append(Facts(tuple(facts)))
    groups = _group_folders(folder)
    if not groups:
        section.notes.append(f"{section.folder}/ holds no group folder with results")
        return section
    summaries = {
        g.name: read_dict(g / "summary.json", section.notes, project) or {} for g in groups
    }
    columns = [c for c in _RESOLUTIONS if any(c[0] in r for r in summaries.values())]
    columns = columns or list(_RESOLUTIONS[:2])
    rows = []
    for name, record in summaries.items():
        rows.append(
            (
                str(record.get("name", name)),
                count(record.get("n_particles")),
                count(record.get("box")),
                number(record.get("voxel_size_A"), 3),
                *(_resolution(record, key, flag) for key, flag, _ in columns),
            )
        )
    section.blocks.append(
        Table(
            header=("group", "particles", "box (voxels)", "voxel (Å)", *(c[2] for c in columns)),
            rows=tuple(rows),
            caption="Resolution where the Fourier shell correlation between the half maps "
            "drops below 0.143 and 0.5 (Å; lower is better); 'vs model': FSC between the map "
            "and a map simulated from the group's centroid model. * never below the "
            "threshold: the value is the Nyquist limit.",
        )
    )
    if isinstance(skipped, list) and skipped:
        section.notes.append("groups skipped: " + "; ".join(_skipped(s) for s in skipped))
    best = [as_float(r.get("resolution_fsc0143_A")) for r in summaries.values()]
    best = [b for b in best if b is not None]
    section.headline = f"{len(groups)} maps" + (
        f", best FSC 0.143 {min(best):.2f} Å" if best else ""
    )
    for group in groups:
        section.subsections.append(_group_subsection(project, group, summaries[group.name]))
    return section


def _skipped(entry) -> str:
    if isinstance(entry, dict):
        name = entry.get("name") or entry.get("group") or "?"
        why = entry.get("reason") or entry.get("why") or ""
        return f"{name} ({why})" if why else str(name)
    return str(entry)


def _group_subsection(project: Path, folder: Path, record: dict) -> Section:
    name = str(record.get("name", folder.name))
    sub = Section(
        key=f"reconstruct-{folder.name}",
        title=f"Group {name}",
        folder=relative(folder, project),
        ran=True,
    )
    sub.seconds, sub.finished = step_record(folder, sub.notes, project)
    timing = record.get("timing_s")
    if sub.seconds is None and isinstance(timing, dict):
        sub.seconds = sum(v for v in (as_float(t) for t in timing.values()) if v is not None)
    facts = [("particles", count(record.get("n_particles")))]
    for key, flag, column in _RESOLUTIONS:
        if key in record:
            facts.append((column, _resolution(record, key, flag)))
    amplitudes = record.get("mean_amplitudes")
    if isinstance(amplitudes, dict) and amplitudes:
        pairs = [(int(m) if str(m).isdigit() else m, number(v, 1)) for m, v in amplitudes.items()]
        text = ", ".join(f"{m}: {v}" for m, v in pairs)
        facts.append(("mean amplitudes (mode: value)", text))
    facts += _map_facts(folder / "map.mrc", sub.notes, project)
    sub.blocks.append(Facts(tuple(facts)))
    items = [(folder / "slices.png", f"Central slices of the map of {name}.")]
    fsc_caption = (
        "Fourier shell correlation between the half maps (and against the centroid-model "
        "map where computed), with the 0.143 and 0.5 thresholds."
    )
    shown = gallery(sub, project, items + [(folder / "fsc.png", fsc_caption)], ("slices.png",))
    images = list(shown.images) if shown else []
    if not (folder / "fsc.png").is_file():
        rows = read_csv_rows(folder / "fsc.csv", sub.notes, project)
        data = figures.fsc_figure(rows) if rows else None
        if data is not None:
            images.append(Image(data, "image/png", fsc_caption, "drawn from fsc.csv"))
    if images:
        sub.blocks.append(Gallery(tuple(images)))
    return sub


def _map_facts(path: Path, notes: list[str], project: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    try:
        import mrcfile

        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            shape = (int(mrc.header.nz), int(mrc.header.ny), int(mrc.header.nx))
            voxel = float(mrc.voxel_size.x)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"{relative(path, project)} header could not be read: {exc}")
        return []
    return [
        ("map", relative(path, project)),
        ("box (voxels)", " × ".join(str(s) for s in shape)),
        ("voxel size (Å)", number(voxel, 3)),
    ]


# --------------------------------------------------------------------------------------------
# Evaluation against ground truth


def _results(record) -> tuple[list[dict], dict]:
    """(result rows, the rest of the record) from an evaluation.json value."""
    if isinstance(record, list):
        return [r for r in record if isinstance(r, dict)], {}
    if isinstance(record, dict) and isinstance(record.get("results"), list):
        return [r for r in record["results"] if isinstance(r, dict)], record
    if isinstance(record, dict) and "label" in record:
        return [record], {}
    return [], {}


def evaluate_section(project: Path, options: ReportOptions) -> Section:
    """PROJECT/evaluate/ (and PROJECT/evaluate/*/): evaluation.json, scatter*.png, helix.png."""
    folder = project / "evaluate"
    section = start_section(project, "evaluate", "Accuracy against ground truth", folder)
    if not section.ran:
        return section
    paths = [folder / "evaluation.json"] if (folder / "evaluation.json").is_file() else []
    paths += sorted(folder.glob("*/evaluation.json"))
    if not paths:
        section.notes.append(f"{section.folder}/ holds no evaluation.json")
    for path in paths:
        target = section
        if path.parent != folder:
            target = Section(
                key=f"evaluate-{path.parent.name}",
                title=f"Evaluation {path.parent.name}",
                folder=relative(path.parent, project),
                ran=True,
            )
            section.subsections.append(target)
        _evaluation_blocks(project, path, target)
        if not section.headline and target.headline:
            section.headline = target.headline
    return section


def _short_path(text: str, project: Path) -> str:
    """A path relative to the project when inside it, else its last two parts."""
    path = Path(text)
    inside = relative(path, project)
    if not Path(inside).is_absolute():
        return inside
    return Path(*path.parts[-2:]).as_posix()


_SCATTER = {
    "scatter_stage1.png": "Stage 1 vs truth",
    "scatter_network.png": "Network vs truth",
    "scatter.png": "Estimates vs truth",
    "scatter_against.png": "Estimates vs the second estimate",
    "scatter_against_truth.png": "Second estimate vs truth",
}
"""Captions of the scatter figures that ``evaluate`` and ``run`` write."""


def _scatter_order(path: Path) -> int:
    names = list(_SCATTER)
    return names.index(path.name) if path.name in names else len(names)


def _main_result(results: list[dict]) -> dict:
    """The row the overview quotes: the refined predictions, else 'predicted vs truth', else
    the first."""
    for wanted in ("refinement vs truth", "predicted vs truth"):
        for result in results:
            if wanted in str(result.get("label", "")):
                return result
    return results[0]


def _evaluation_blocks(project: Path, path: Path, section: Section) -> None:
    from deephemnma.evaluate import PAPER_ROWS
    from deephemnma.report.evaluation import paper_tables

    record = read_json(path, section.notes, project)
    results, rest = _results(record)
    if record is not None and not results:
        section.notes.append(f"{relative(path, project)} holds no evaluation result")
    if results:
        facts = [
            (what, _short_path(str(rest[key]), project))
            for key, what in (
                ("predicted", "estimates"),
                ("truth", "ground truth"),
                ("against", "second estimate"),
                ("modes", "modes (for RMSD)"),
            )
            if rest.get(key)
        ]
        first = results[0]
        facts.append(("rows matched by", str(first.get("matched_by", DASH))))
        facts.append(("unmatched estimates", count(first.get("n_unmatched"))))
        section.blocks.append(Facts(tuple(facts)))
        section.blocks.extend(paper_tables(results, list(PAPER_ROWS.values())))
        main = _main_result(results)
        amp = (main.get("amplitudes") or {}).get("mean_over_modes")
        angle = ((main.get("angles") or {}).get("axes") or {}).get("mean")
        section.headline = (
            f"{main.get('label', '')}: amplitude MAE {number(amp, 1)}, angle {number(angle, 2)}°"
        )
    folder = path.parent
    what = "estimate against truth for every parameter, and the histogram of angular errors."
    items = [
        (png, f"{_SCATTER.get(png.name, png.stem)}: {what}")
        for png in sorted(folder.glob("scatter*.png"), key=_scatter_order)
    ]
    items.append(
        (
            folder / "helix.png",
            "Estimated (blue) and true (red) amplitudes of the first three modes (paper Fig. 6).",
        )
    )
    add(section, gallery(section, project, items, wide=tuple(p.name for p, _ in items[:-1])))
