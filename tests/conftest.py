"""Suite-wide set-up: every temporary file of the run goes to one folder, removed at the end.

Processes that the tests start and kill (``kill -9`` resume tests, torchrun, Chromium, Dask
workers) leave their own temporary folders behind: multiprocessing's ``pymp-*``,
``torchelastic_*``, Chromium's singleton sockets, ``dask-scratch-space``. With ``TMPDIR``
pointing here for the whole run, repeated ``make test`` runs leave nothing in /tmp.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_tmpdir(tmp_path_factory):
    # Fix pytest's own base folder first, so that it (and a failed test's tmp_path, kept
    # for debugging) stays where it would be.
    tmp_path_factory.getbasetemp()
    folder = tempfile.mkdtemp(prefix="deephemnma-tests-")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = folder
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = None
        shutil.rmtree(folder, ignore_errors=True)
