"""The steps of ``deephemnma run``: each reads earlier steps' folders and writes its own.

Every step is a plain function of a :class:`Context` that calls the library (the same code
as the single commands) and returns a small dict of figures for ``step.json``. Row order is
the bookkeeping that links the steps: ``preprocess`` keeps the input's row order, Stage 1
runs on a random subset of rows, prediction on the others.

Project layout (one folder per step, each with its ``step.json``)::

    nma/          modes.npz, analysis_modes.npz, reference.pdb or .cif (the selected
                  atoms), modes.png
    preprocess/   particles.star (+ stacks), truth.star (ground truth under these names)
    stage1/       subset.star, particles.star (Stage-1 estimates), summary.json/.png
    filter/       particles.star (kept), particles.png
    train/        best.pt, history.csv, curves.png, splits/
    predict/      input.star, particles_network.star, particles.star (refined)
    evaluate/     evaluation.json, table.txt, scatter*.png, helix.png (with ground truth)
    analyze/      space.npz, groups.json, figures, models/, trajectories/
    reconstruct/  <group>/map.mrc, half maps, FSC; images.star
    report.html   the HTML report (step record in report/)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_write_text
from deephemnma.pipeline.config import ProjectConfig


@dataclass(frozen=True)
class Context:
    config: ProjectConfig
    root: Path

    def folder(self, step: str) -> Path:
        return self.root / step

    def workers(self) -> int:
        return self.config.project.workers or os.cpu_count() or 1

    def align_workers(self) -> int | None:
        """Stage 1 / refinement processes: the project's setting, else None (run_chunks then
        runs one process on a GPU, all cores on the CPU)."""
        return self.config.project.workers or None

    def modes(self) -> Path:
        return self.folder("nma") / "modes.npz"

    def reference(self) -> Path:
        from deephemnma.io.pdb import find_reference

        return find_reference(self.folder("nma"))

    def mode_numbers(self) -> tuple[int, ...]:
        from deephemnma.nma.modes import parse_mode_numbers

        return tuple(parse_mode_numbers(self.config.nma.modes))

    def align_device(self) -> str:
        """Stage 1 and refinement: their own setting (CPU unless asked), since their local
        worker processes would otherwise all share one GPU."""
        return self.config.project.align_device


@dataclass(frozen=True)
class Step:
    """name: folder; sections: config sections it depends on; inputs: user files it reads;
    after: steps it reads from; run: the work; optional: skipped when ``enabled`` is False."""

    name: str
    sections: tuple[str, ...]
    after: tuple[str, ...]
    run: Callable[[Context], dict]
    inputs: Callable[[ProjectConfig], list] = lambda config: []
    enabled: Callable[[ProjectConfig], bool] = lambda config: True


def _write_config(folder: Path, ctx: Context, sections) -> None:
    record = {name: ctx.config.section_dict(name) for name in ("project", *sections)}
    atomic_write_text(folder / "config.json", json.dumps(record, indent=2) + "\n")


def _require(path: Path | None, key: str) -> Path:
    if path is None:
        raise InputError("required by the pipeline", field=f"project.{key}")
    if not path.exists():
        raise InputError("file not found", path=path, field=f"project.{key}")
    return path


# ---------------------------------------------------------------------------------------------


def run_nma(ctx: Context) -> dict:
    from deephemnma.io.pdb import read_structure, reference_path, write_structure
    from deephemnma.nma.export import plot_modes
    from deephemnma.nma.modes import compute_modes, load_modes, parse_mode_numbers, save_modes

    out = ctx.folder("nma")
    cfg = ctx.config.nma
    reference = _require(ctx.config.path("reference"), "reference")
    modes_file = ctx.config.path("modes_file")
    if modes_file is not None:
        modes = load_modes(_require(modes_file, "modes_file"))
    else:
        structure = read_structure(reference, selection=cfg.selection)
        modes = compute_modes(
            structure,
            n_modes=cfg.n_modes,
            method=cfg.method,
            cutoff_A=cfg.cutoff_A or None,
            block_residues=cfg.block_residues,
            progress=ctx.config.project.progress,
        )
    parse_mode_numbers(cfg.modes, available=modes.mode_numbers)  # fail early on bad modes
    # Every later step puts the reference's center of mass at the box center (align and
    # refine --center); the models, maps and trajectories must share that frame.
    modes = dataclasses.replace(modes, structure=modes.structure.centered())
    save_modes(out / "modes.npz", modes)
    # The analysis modes alone: what the amplitude columns of every later step hold.
    save_modes(out / "analysis_modes.npz", modes.select(list(ctx.mode_numbers())))
    write_structure(reference_path(out, modes.structure), modes.structure)
    plot_modes(out / "modes.png", modes.select(list(ctx.mode_numbers())))
    _write_config(out, ctx, ["nma"])
    return {"atoms": int(modes.structure.n_atoms), "modes": list(ctx.mode_numbers())}


def run_preprocess(ctx: Context) -> dict:
    from deephemnma.io.star import read_particles
    from deephemnma.preprocess import PreprocessConfig, preprocess_dataset

    out = ctx.folder("preprocess")
    cfg = ctx.config.preprocess
    particles = _require(ctx.config.path("particles"), "particles")
    config = PreprocessConfig(out_size=cfg.size, phase_flip=cfg.phase_flip)
    star = preprocess_dataset(particles, out, config, progress=ctx.config.project.progress)
    truth = ctx.config.path("truth")
    if truth is not None:
        write_truth(read_particles(particles), read_particles(_require(truth, "truth")),
                    read_particles(star), out / "truth.star")  # fmt: skip
    _write_config(out, ctx, ["preprocess"])
    return {"particles": len(read_particles(star))}


def write_truth(original, truth, preprocessed, path: Path) -> Path:
    """The ground truth under the preprocessed image names (rows follow ``preprocessed``)."""
    from deephemnma.evaluate import match_rows
    from deephemnma.io.star import ANGLES, IMAGE_NAME, ORIGINS_A, write_particles

    rows_original, rows_truth, _ = match_rows(original, truth)
    if len(rows_original) != len(original):
        raise InputError(
            "the ground truth does not cover every particle",
            path=truth.path,
            expected=f"{len(original)} matching rows",
            found=str(len(rows_original)),
        )
    order = np.empty(len(original), dtype=np.int64)
    order[rows_original] = rows_truth
    labels = [c for c in truth.particles.columns if c.startswith("deephemnmaAmplitude")]
    labels += [c for c in (*ANGLES, *ORIGINS_A) if c in truth.particles.columns]
    table = preprocessed.particles.copy()
    for label in labels:
        table[label] = truth.particles[label].to_numpy()[order]
    table[IMAGE_NAME] = preprocessed.particles[IMAGE_NAME]
    from dataclasses import replace

    return write_particles(path, replace(preprocessed, particles=table))


def training_rows(n_total: int, n_train: int, seed: int) -> np.ndarray:
    """Sorted random rows for Stage 1 (all rows when n_train ≥ n_total)."""
    if n_train >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_train, replace=False))


def run_stage1(ctx: Context) -> dict:
    from deephemnma.align.figures import summary_figure
    from deephemnma.align.run import align_dataset
    from deephemnma.align.stage1 import AlignConfig
    from deephemnma.cli.align import _int_tuple
    from deephemnma.io.star import read_particles, select, write_particles

    out = ctx.folder("stage1")
    cfg = ctx.config.stage1
    table = read_particles(ctx.folder("preprocess") / "particles.star")
    rows = training_rows(len(table), cfg.n_images, cfg.seed)
    subset = out / "subset.star"
    if not subset.exists():
        write_particles(subset, select(table, rows))
        atomic_write_text(out / "subset_rows.json", json.dumps(rows.tolist()))
    sizes, steps = _int_tuple(cfg.sizes, "stage1.sizes"), _int_tuple(cfg.steps, "stage1.steps")
    if len(sizes) != len(steps):
        raise InputError("one step count per size", field="stage1.steps", found=cfg.steps)
    config = AlignConfig(
        sizes=sizes,
        steps=steps,
        lrs=tuple([1.0, 0.3, 0.1, 0.1, 0.1][: len(sizes)]),
        amplitude_range=cfg.amplitude_range,
        library_spacing_deg=cfg.library_spacing_deg,
        library_components=cfg.library_components,
        candidates=cfg.candidates,
        max_shift_A=cfg.max_shift_A,
    )
    star = align_dataset(
        subset,
        ctx.modes(),
        ctx.reference(),
        out,
        ctx.mode_numbers(),
        config,
        chunk_size=cfg.chunk_size,
        scheduler=ctx.config.project.scheduler or None,
        workers=ctx.align_workers(),
        device=ctx.align_device(),
        progress=ctx.config.project.progress,
    )
    summary_figure(read_particles(star), out / "summary.png")
    return {"particles": len(rows), "workers": ctx.workers()}


def run_filter(ctx: Context) -> dict:
    from deephemnma.align.figures import filter_figure
    from deephemnma.align.filter import keep_mask, mahalanobis_distances
    from deephemnma.io.star import amplitudes, read_particles, select, write_particles

    out = ctx.folder("filter")
    table = read_particles(ctx.folder("stage1") / "particles.star")
    _, amps = amplitudes(table)
    limit = ctx.config.filter.mahalanobis or None
    keep = keep_mask(amps, None, limit, None) if limit else np.ones(len(table), dtype=bool)
    write_particles(out / "particles.star", select(table, np.flatnonzero(keep)))
    filter_figure(amps, mahalanobis_distances(amps), keep, limit, out / "particles.png")
    _write_config(out, ctx, ["filter"])
    return {"kept": int(keep.sum()), "of": len(keep)}


def run_train(ctx: Context) -> dict:
    from deephemnma.network.train import recipe_config, train

    cfg = ctx.config.train
    config = recipe_config(
        cfg.recipe,
        epochs=cfg.epochs or None,
        batch_size=cfg.batch_size or None,
        val=cfg.val,
        test=cfg.test,
        precision=cfg.precision,
        max_minutes=cfg.max_minutes or None,
        synthetic=cfg.synthetic or None,
    )
    result = train(
        ctx.folder("filter") / "particles.star",
        ctx.folder("train"),
        config,
        modes=ctx.modes(),
        reference=ctx.reference() if cfg.synthetic else None,
        device=ctx.config.project.device,
        threads=ctx.config.project.threads or None,
        progress=ctx.config.project.progress,
        log=_silent if not ctx.config.project.progress else print,
    )
    return {"epochs": result["epochs_done"], "best": result["best"]}


def _silent(*_args, **_kwargs) -> None:
    pass


def prediction_rows(ctx: Context) -> np.ndarray:
    """Rows not in Stage 1's subset."""
    from deephemnma.io.star import read_particles

    n = len(read_particles(ctx.folder("preprocess") / "particles.star"))
    taken = json.loads((ctx.folder("stage1") / "subset_rows.json").read_text())
    mask = np.ones(n, dtype=bool)
    mask[np.asarray(taken, dtype=np.int64)] = False
    return np.flatnonzero(mask)


def run_predict(ctx: Context) -> dict:
    from deephemnma.io.star import read_particles, select, write_particles

    out = ctx.folder("predict")
    rows = prediction_rows(ctx)
    if len(rows) == 0:
        _write_config(out, ctx, ["predict"])
        return {"particles": 0, "note": "Stage 1 covered every particle"}
    table = read_particles(ctx.folder("preprocess") / "particles.star")
    source = out / "input.star"
    if not source.exists():
        write_particles(source, select(table, rows))
    cfg = ctx.config.predict
    options = {
        "device": ctx.config.project.device,
        "batch_size": cfg.batch_size,
        "threads": ctx.config.project.threads or None,
        "progress": ctx.config.project.progress,
        "tta": cfg.tta,
        "tta_turns": cfg.tta_turns,
    }
    final = out / "particles.star"
    if cfg.refine:
        from deephemnma.align.refine_run import predict_and_refine
        from deephemnma.cli.refine import min_score_from, refine_config

        result = predict_and_refine(
            source,
            ctx.folder("train"),
            final,
            ctx.modes(),
            ctx.reference(),
            refine_config(
                cfg.refine_sizes,
                cfg.refine_steps,
                restarts=6,
                global_search=True,
                # Stage 1's scores say what correct fits of these images reach.
                min_score=min_score_from(ctx.folder("stage1") / "particles.star"),
            ),
            predict_options=options,
            refine_options={
                "workers": ctx.align_workers(),
                "scheduler": ctx.config.project.scheduler or None,
                "device": ctx.align_device(),
                "progress": ctx.config.project.progress,
            },
        )
        extra = {"particles": len(rows), "refine": result["refine"], "workers": ctx.workers()}
    else:
        from deephemnma.network.predict import predict

        network = out / "particles_network.star"
        result = predict(source, ctx.folder("train"), network, **options)
        write_particles(final, read_particles(network))
        extra = {"particles": len(rows), "images_per_s": result.get("images_per_s")}
    _write_config(out, ctx, ["predict"])
    return extra


def run_evaluate(ctx: Context) -> dict:
    from deephemnma.evaluate import PAPER_ROWS, compare, write_evaluation_folder
    from deephemnma.io.star import read_particles
    from deephemnma.nma.modes import load_modes

    out = ctx.folder("evaluate")
    truth = read_particles(ctx.folder("preprocess") / "truth.star")
    modes = load_modes(ctx.modes())
    candidates = [
        ("Stage 1 vs truth", ctx.folder("stage1") / "particles.star", "scatter_stage1.png"),
        ("network vs truth", ctx.folder("predict") / "particles_network.star",
         "scatter_network.png"),
        ("network + refinement vs truth", ctx.folder("predict") / "particles.star",
         "scatter.png"),
    ]  # fmt: skip
    if not ctx.config.predict.refine:
        candidates = candidates[:2]
    present = [(label, path, name) for label, path, name in candidates if path.exists()]
    comparisons = [compare(read_particles(p), truth, modes, label=lb) for lb, p, _ in present]
    paper = [PAPER_ROWS[k] for k in ("table1_hemnma_truth", "table3")]
    write_evaluation_folder(
        comparisons,
        out,
        "paper-protocol evaluation",
        paper,
        [name for _, _, name in present],
        helix_index=-1,
    )
    _write_config(out, ctx, [])
    return {"rows": [c.label for c in comparisons]}


def run_analyze(ctx: Context) -> dict:
    from deephemnma.analysis.run import AnalyzeSettings, analyze

    cfg = ctx.config.analyze
    predicted = ctx.folder("predict") / "particles.star"
    stage1 = ctx.folder("filter") / "particles.star"
    truth = ctx.folder("preprocess") / "truth.star"
    method = None if cfg.method == "none" else cfg.method
    settings = AnalyzeSettings(
        method=method,
        n_groups=cfg.groups if method else None,
        min_per_group=cfg.min_per_group,
        gif=cfg.gif,
        label="predicted",
    )
    main, second = (predicted, stage1) if predicted.exists() else (stage1, None)
    summary = analyze(
        main,
        ctx.folder("analyze"),
        settings,
        stage1=second,
        truth=truth if truth.exists() else None,
        modes=ctx.modes(),
        progress=ctx.config.project.progress,
    )
    return {"groups": summary.get("groups", {})}


def original_images_for(ctx: Context, table) -> Path:
    """A STAR of the full-size input images in the rows of ``table`` (preprocessed names)."""
    from deephemnma.evaluate import image_keys
    from deephemnma.io.star import read_particles, select, write_particles

    preprocessed = read_particles(ctx.folder("preprocess") / "particles.star")
    original = read_particles(_require(ctx.config.path("particles"), "particles"))
    rows_of = {key: row for row, key in enumerate(image_keys(preprocessed))}
    keys = image_keys(table)
    missing = [k for k in keys if k not in rows_of]
    if missing:
        raise InputError(
            "particles not found among the preprocessed images",
            path=table.path,
            found=missing[0],
        )
    rows = np.array([rows_of[k] for k in keys], dtype=np.int64)
    return write_particles(ctx.folder("reconstruct") / "images.star", select(original, rows))


def run_reconstruct(ctx: Context) -> dict:
    from deephemnma.io.star import read_particles
    from deephemnma.network.train import resolve_device
    from deephemnma.reconstruct.group import ReconstructionSettings
    from deephemnma.reconstruct.run import run_reconstruct

    out = ctx.folder("reconstruct")
    particles = ctx.folder("analyze") / "particles.star"
    if not particles.exists():  # analyze wrote no combined table: one source only
        particles = ctx.folder("predict") / "particles.star"
        if not particles.exists():
            particles = ctx.folder("filter") / "particles.star"
    table = read_particles(particles)
    images = original_images_for(ctx, table) if ctx.config.reconstruct.original_size else None
    summary = run_reconstruct(
        particles,
        out,
        ReconstructionSettings(device=str(resolve_device(ctx.config.project.device))),
        groups_file=ctx.folder("analyze") / "groups.json",
        images=images,
        modes=ctx.folder("nma") / "analysis_modes.npz",
        min_particles=ctx.config.reconstruct.min_particles,
        progress=ctx.config.project.progress,
    )
    _write_config(out, ctx, ["reconstruct"])
    return {"groups": len(summary.get("groups", []))}


def run_report(ctx: Context) -> dict:
    from deephemnma.report import write_report

    path = write_report(ctx.root)  # PROJECT/report.html, where users look first
    return {"report": str(path)}


STEPS: tuple[Step, ...] = (
    Step("nma", ("nma",), (), run_nma,
         inputs=lambda c: [c.path("reference"), c.path("modes_file")]),
    Step("preprocess", ("preprocess",), (), run_preprocess,
         inputs=lambda c: [c.path("particles"), c.path("truth")]),
    Step("stage1", ("stage1",), ("nma", "preprocess"), run_stage1),
    Step("filter", ("filter",), ("stage1",), run_filter),
    Step("train", ("train",), ("filter",), run_train),
    Step("predict", ("predict",), ("train", "stage1", "nma"), run_predict),
    Step("evaluate", (), ("predict", "stage1"), run_evaluate,
         enabled=lambda c: bool(c.project.truth)),
    Step("analyze", ("analyze",), ("predict", "filter"), run_analyze),
    Step("reconstruct", ("reconstruct",), ("analyze",), run_reconstruct,
         enabled=lambda c: c.reconstruct.enabled),
    Step("report", (), ("analyze", "reconstruct", "evaluate"), run_report),
)  # fmt: skip
STEP_NAMES = tuple(s.name for s in STEPS)


def step_settings(step: Step, config: ProjectConfig) -> dict:
    """The settings a step's fingerprint covers (device/progress/workers do not change
    results, so they are left out)."""
    project = asdict(config.project)
    for key in ("device", "align_device", "workers", "scheduler", "threads", "progress"):
        project.pop(key)
    return {"project": project, **{name: config.section_dict(name) for name in step.sections}}
