"""File input and output: particle STAR files, MRC stacks and volumes, PDB/mmCIF models.

No science here: each function reads or writes one kind of file, checks what it reads, and
turns every problem with the input into an :class:`~deephemnma.errors.InputError` that names
the file and the field. Writers are atomic (temporary file, then rename).
"""

from importlib import import_module

# Loaded on first use: the STAR and MRC readers pull in torch (seconds), which light
# commands such as `deephemnma status` and `--help` do not need.
_EXPORTS = {
    "ParticleImages": "mrc",
    "ParticleTable": "star",
    "SELECTIONS": "pdb",
    "StackWriter": "mrc",
    "amplitudes": "star",
    "angles_deg": "star",
    "chunk_image_names": "mrc",
    "common_image_size_px": "star",
    "common_pixel_size_A": "star",
    "ctf_parameters": "star",
    "existing_chunks": "mrc",
    "fill_image_size": "mrc",
    "image_size_px": "star",
    "make_optics": "star",
    "package_data_path": "pdb",
    "pixel_size_A": "star",
    "read_particles": "star",
    "read_stack": "mrc",
    "read_structure": "pdb",
    "read_volume": "mrc",
    "select": "star",
    "shifts_A": "star",
    "with_amplitudes": "star",
    "with_columns": "star",
    "with_ctf": "star",
    "with_poses": "star",
    "write_models": "pdb",
    "write_particles": "star",
    "write_stack": "mrc",
    "write_structure": "pdb",
    "write_volume": "mrc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
