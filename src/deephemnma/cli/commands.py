"""Imports every command module so each registers itself on the app."""

from deephemnma.cli import (  # noqa: F401
    align,
    demo,
    evaluate,
    nma,
    predict,
    preprocess,
    refine,
    simulate,
    train,
)
