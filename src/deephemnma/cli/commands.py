"""Imports every command module so each registers itself on the app."""

from deephemnma.cli import (  # noqa: F401
    align,
    analyze,
    demo,
    evaluate,
    explore,
    export,
    nma,
    predict,
    preprocess,
    reconstruct,
    refine,
    report,
    run,
    simulate,
    train,
)
