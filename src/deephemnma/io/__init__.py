"""File input and output: particle STAR files, MRC stacks and volumes, PDB/mmCIF models.

No science here: each function reads or writes one kind of file, checks what it reads, and
turns every problem with the input into an :class:`~deephemnma.errors.InputError` that names
the file and the field. Writers are atomic (temporary file, then rename).
"""

from deephemnma.io.mrc import (
    ParticleImages,
    StackWriter,
    chunk_image_names,
    existing_chunks,
    fill_image_size,
    read_stack,
    read_volume,
    write_stack,
    write_volume,
)
from deephemnma.io.pdb import (
    SELECTIONS,
    package_data_path,
    read_structure,
    write_models,
    write_structure,
)
from deephemnma.io.star import (
    ParticleTable,
    amplitudes,
    angles_deg,
    common_image_size_px,
    common_pixel_size_A,
    ctf_parameters,
    image_size_px,
    make_optics,
    pixel_size_A,
    read_particles,
    select,
    shifts_A,
    with_amplitudes,
    with_columns,
    with_ctf,
    with_poses,
    write_particles,
)

__all__ = [
    "SELECTIONS",
    "ParticleImages",
    "ParticleTable",
    "StackWriter",
    "amplitudes",
    "angles_deg",
    "chunk_image_names",
    "common_image_size_px",
    "common_pixel_size_A",
    "ctf_parameters",
    "existing_chunks",
    "fill_image_size",
    "image_size_px",
    "make_optics",
    "package_data_path",
    "pixel_size_A",
    "read_particles",
    "read_stack",
    "read_structure",
    "read_volume",
    "shifts_A",
    "with_amplitudes",
    "with_poses",
    "write_models",
    "write_particles",
    "write_stack",
    "write_structure",
    "write_volume",
    "with_ctf",
    "with_columns",
    "select",
]
