"""The project configuration of ``deephemnma run``: one TOML file, one section per step.

Every key is also a command-line flag ``--SECTION.KEY VALUE`` (e.g. ``--stage1.n_images
2000``), which overrides the file. Unknown sections or keys, and values of the wrong type,
are errors that name the key. Relative paths in ``[project]`` are relative to the TOML file.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import get_type_hints

from deephemnma.errors import InputError


def _key(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ProjectSection:
    particles: str = _key("", "Particle STAR (RELION 3.0/3.1; raw or phase-flipped) with CTF.")
    reference: str = _key("", "Reference atomic model (PDB/mmCIF) the modes are computed on.")
    modes_file: str = _key("", "Existing modes file (.npz) to use instead of computing modes.")
    truth: str = _key("", "Ground-truth STAR (simulations): enables the evaluate step.")
    device: str = _key("auto", "auto | cpu | cuda for training, prediction, reconstruction.")
    align_device: str = _key("cpu", "cpu | cuda for Stage 1 and refinement (per worker).")
    workers: int = _key(0, "Local worker processes for Stage 1 / refinement (0: all cores).")
    scheduler: str = _key("", "Dask scheduler tcp://HOST:PORT for Stage 1 / refinement.")
    threads: int = _key(0, "torch threads for training/prediction (0: torch's choice).")
    progress: bool = _key(True, "Progress bars.")


@dataclass(frozen=True)
class NMASection:
    selection: str = _key("heavy", "Network atoms: heavy | ca | ca+p | backbone | all.")
    method: str = _key("auto", "rtb | anm | auto.")
    cutoff_A: float = _key(0.0, "Spring cut-off in Å (0: the selection's default).")
    block_residues: int = _key(10, "RTB block size in residues (paper: 10 AK, 20 ribosome).")
    n_modes: int = _key(20, "Modes computed (the first 6 are rigid).")
    modes: str = _key("7-9", "Modes used for the analysis, e.g. 7-9 or 7-9,11.")


@dataclass(frozen=True)
class PreprocessSection:
    size: int = _key(128, "Box in pixels after Fourier cropping (paper: 128).")
    phase_flip: bool = _key(True, "Phase flip the images (the paper's input).")


@dataclass(frozen=True)
class Stage1Section:
    n_images: int = _key(20000, "Training subset for Stage 1 (random rows; paper: 20,000).")
    seed: int = _key(0, "Seed of the subset.")
    sizes: str = _key("32,64,128", "Refinement boxes in pixels, coarse to fine.")
    steps: str = _key("20,10,10", "Optimizer steps per box.")
    amplitude_range: float = _key(200.0, "Largest |amplitude| expected (library grid).")
    library_spacing_deg: float = _key(12.0, "Orientation spacing of the search library, °.")
    library_components: int = _key(256, "Principal components of the search library (0: all).")
    candidates: int = _key(6, "Library matches refined per image.")
    max_shift_A: float = _key(3.0, "Origins tried by the global search, Å (refinement goes on).")
    chunk_size: int = _key(256, "Particles per resumable chunk.")


@dataclass(frozen=True)
class FilterSection:
    mahalanobis: float = _key(3.2, "Keep Stage-1 amplitudes within this distance (0: off).")


@dataclass(frozen=True)
class TrainSection:
    recipe: str = _key("default", "default | paper.")
    epochs: int = _key(0, "Epochs (0: the recipe's).")
    batch_size: int = _key(0, "Batch size (0: the recipe's).")
    val: str = _key("auto", "Validation images: a count, a fraction, or auto.")
    test: str = _key("auto", "Small test images: a count, a fraction, or auto.")
    precision: str = _key("auto", "auto | fp32 | bf16.")
    max_minutes: float = _key(
        0.0, "Time budget in minutes: as many epochs (at most `epochs`) as fit (0: none)."
    )
    synthetic: float = _key(
        0.0,
        "Share of each batch whose particle signal is swapped for the reference rendered "
        "with other labels (the image's own noise kept; exact labels). 0: off.",
    )


@dataclass(frozen=True)
class PredictSection:
    refine: bool = _key(True, "Refine each prediction against its image (hybrid inference).")
    refine_sizes: str = _key("64,128", "Refinement boxes in pixels.")
    refine_steps: str = _key("15,10", "Refinement steps per box.")
    batch_size: int = _key(256, "Images per forward pass.")
    tta: bool = _key(
        False, "Test-time augmentation: consensus of 8 rotated/mirrored copies (8× the work)."
    )
    tta_turns: int = _key(
        1, "With tta: each copy also turned by multiples of 90°/N (2: 16 copies, 2× the work)."
    )


@dataclass(frozen=True)
class AnalyzeSection:
    method: str = _key("density", "Automatic groups: density | kmeans | gmm | bins | none.")
    groups: int = _key(10, "Number of groups (paper: 10).")
    min_per_group: int = _key(1, "Smallest group (bins: every bin has at least this many).")
    gif: bool = _key(True, "Animated GIFs of the trajectories.")


@dataclass(frozen=True)
class ReconstructSection:
    enabled: bool = _key(True, "Reconstruct every group.")
    original_size: bool = _key(True, "Use the full-size input images (else the cropped ones).")
    min_particles: int = _key(100, "Skip groups with fewer particles.")


SECTIONS: dict[str, type] = {
    "project": ProjectSection,
    "nma": NMASection,
    "preprocess": PreprocessSection,
    "stage1": Stage1Section,
    "filter": FilterSection,
    "train": TrainSection,
    "predict": PredictSection,
    "analyze": AnalyzeSection,
    "reconstruct": ReconstructSection,
}


@dataclass(frozen=True)
class ProjectConfig:
    """All sections; ``folder`` is where relative input paths are resolved from."""

    project: ProjectSection = ProjectSection()
    nma: NMASection = NMASection()
    preprocess: PreprocessSection = PreprocessSection()
    stage1: Stage1Section = Stage1Section()
    filter: FilterSection = FilterSection()
    train: TrainSection = TrainSection()
    predict: PredictSection = PredictSection()
    analyze: AnalyzeSection = AnalyzeSection()
    reconstruct: ReconstructSection = ReconstructSection()
    folder: str = "."

    def path(self, key: str) -> Path | None:
        """A ``[project]`` path resolved against ``folder`` (None when empty)."""
        value = getattr(self.project, key)
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.folder) / path).resolve()

    def section_dict(self, name: str) -> dict:
        return asdict(getattr(self, name))


def _coerce(value, kind, where: str):
    """``value`` (from TOML or a command line string) as ``kind`` (bool, int, float, str)."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
        else:
            try:
                return kind(text)
            except ValueError:
                pass
        raise InputError("wrong type", field=where, expected=kind.__name__, found=repr(value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError("wrong type", field=where, expected=kind.__name__, found=repr(value))
    return value


def _section(name: str, values: dict, current, source) -> object:
    cls = SECTIONS[name]
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise InputError(
                f"unknown key in [{name}]",
                path=source,
                field=f"{name}.{key}",
                expected=", ".join(sorted(known)),
            )
        changes[key] = _coerce(value, hints[key], f"{name}.{key}")
    return replace(current, **changes)


def apply(config: ProjectConfig, values: dict[str, dict], source=None) -> ProjectConfig:
    """``config`` with ``{section: {key: value}}`` applied (checked)."""
    changes = {}
    for name, section_values in values.items():
        if name not in SECTIONS:
            raise InputError(
                "unknown section", path=source, field=name, expected=", ".join(SECTIONS)
            )
        if not isinstance(section_values, dict):
            raise InputError("a section must be a table", path=source, field=name)
        changes[name] = _section(name, section_values, getattr(config, name), source)
    return replace(config, **changes)


def parse_overrides(args: list[str]) -> dict[str, dict]:
    """``--section.key value`` / ``--section.key=value`` pairs from a command line."""
    values: dict[str, dict] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise InputError(
                "unexpected argument", field=arg, expected="--SECTION.KEY VALUE (see --help)"
            )
        name = arg[2:]
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise InputError("missing value", field=arg)
            value = args[i + 1]
            i += 2
        section, key = name.split(".", 1)
        values.setdefault(section, {})[key.replace("-", "_")] = value
    return values


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ProjectConfig:
    """Read a project TOML (None: defaults only) and apply command-line overrides."""
    config = ProjectConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("configuration file not found", path=path)
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"not valid TOML: {exc}", path=path) from None
        config = replace(apply(config, data, path), folder=str(path.parent.resolve()))
    if overrides:
        config = apply(config, parse_overrides(overrides), "command line")
    return config


def to_toml(config: ProjectConfig) -> str:
    """The configuration as TOML text (every key, with its help as a comment)."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"[{name}]")
        section = getattr(config, name)
        for f in fields(cls):
            value = getattr(section, f.name)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{f.name} = {text}  # {f.metadata.get('help', '')}")
        lines.append("")
    return "\n".join(lines)


def keys_help() -> str:
    """Every ``--section.key`` with its default and meaning (for ``--help``)."""
    lines = []
    for name, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else ""
            lines.append(f"--{name}.{f.name} (default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
