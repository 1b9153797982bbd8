"""MRC volumes and stacks, particle images through memory maps, chunked stack writing
(deephemnma.io.mrc). Headers are checked with ``mrcfile`` directly, as an independent reader.
"""

from __future__ import annotations

import pickle
import resource
import time
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from deephemnma.errors import InputError
from deephemnma.io import mrc as mrc_io
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
from deephemnma.io.star import (
    ParticleTable,
    common_image_size_px,
    make_optics,
    read_particles,
    write_particles,
)

BOX = 16


def _images(n: int, tag: float, box: int = BOX) -> np.ndarray:
    """Images whose pixels encode (tag, index): image i is tag + i everywhere, plus a ramp."""
    ramp = np.arange(box * box, dtype=np.float32).reshape(box, box) * 1e-3
    return (tag + np.arange(n, dtype=np.float32))[:, None, None] + ramp


def _table(names: list[str], star_path: Path | None, pixel_A: float = 1.5, box: int = BOX):
    particles = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": 1})
    return ParticleTable(make_optics(pixel_A, box, 300, 2.7, 0.1), particles, star_path)


# -- volumes and stacks -----------------------------------------------------------------------


def test_volume_round_trip(tmp_path: Path):
    vol = np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float64)
    path = write_volume(tmp_path / "map.mrc", vol, 1.25)
    with mrcfile.open(path) as m:  # independent reader
        assert m.data.dtype == np.float32 and m.data.shape == (8, 10, 12)
        assert m.is_volume()
        assert float(m.voxel_size.x) == pytest.approx(1.25)
    back, voxel_A = read_volume(path)
    np.testing.assert_array_equal(back, vol.astype(np.float32))
    assert voxel_A == pytest.approx(1.25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.mrc"]


def test_volume_errors(tmp_path: Path):
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "none.mrc")
    assert "none.mrc" in str(err.value)
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"not an mrc file" * 100)
    with pytest.raises(InputError) as err:
        read_volume(junk)
    assert "junk.mrc" in str(err.value) and "MRC" in str(err.value)
    unset = write_volume(tmp_path / "unset.mrc", np.zeros((4, 4, 4)), 0.0)
    with pytest.raises(InputError) as err:
        read_volume(unset)
    assert "voxel size" in str(err.value)
    assert read_volume(unset, voxel_size_A=2.0)[1] == 2.0
    with mrcfile.new(tmp_path / "aniso.mrc") as m:
        m.set_data(np.zeros((4, 4, 4), np.float32))
        m.voxel_size = (1.0, 1.0, 2.0)
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "aniso.mrc")
    assert "anisotropic" in str(err.value)


def test_stack_round_trip(tmp_path: Path):
    images = _images(5, 10.0)
    path = write_stack(tmp_path / "s.mrcs", images, 0.65)
    with mrcfile.open(path) as m:
        assert m.is_image_stack() and m.data.shape == (5, BOX, BOX)
        assert float(m.voxel_size.x) == pytest.approx(0.65)
    back, pixel_A = read_stack(path)
    np.testing.assert_array_equal(back, images)
    assert pixel_A == pytest.approx(0.65)


# -- i@file across stacks -----------------------------------------------------------------------


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """A STAR file in star/ referencing three stacks in different folders."""
    stacks = [_images(4, 100.0), _images(6, 200.0), _images(3, 300.0)]
    write_stack(tmp_path / "star" / "a.mrcs", stacks[0], 1.5)
    write_stack(tmp_path / "star" / "sub" / "deeper" / "b.mrcs", stacks[1], 1.5)
    write_stack(tmp_path / "elsewhere" / "c.mrcs", stacks[2], 1.5)
    names = (
        [f"{i + 1:06d}@a.mrcs" for i in range(4)]
        + [f"{i + 1:06d}@sub/deeper/b.mrcs" for i in range(6)]
        + [f"{i + 1}@../elsewhere/c.mrcs" for i in range(3)]
    )
    star_path = tmp_path / "star" / "particles.star"
    write_particles(star_path, _table(names, star_path))
    return star_path, stacks


def test_images_across_stacks_in_requested_order(project):
    star_path, stacks = project
    everything = np.concatenate(stacks)
    images = ParticleImages(read_particles(star_path))
    assert len(images) == 13 and images.n_stacks == 3
    order = np.array([12, 0, 5, 5, 3, 9, 11, 1, 4])  # shuffled, repeated, across stacks
    batch = images.images(order)
    assert batch.dtype == np.float32 and batch.shape == (len(order), BOX, BOX)
    np.testing.assert_array_equal(batch, everything[order])
    np.testing.assert_array_equal(images[7], everything[7])
    assert images.stack_path(12).resolve() == (star_path.parent.parent / "elsewhere" / "c.mrcs")


def test_each_stack_opened_once(project, monkeypatch):
    star_path, stacks = project
    opened: list[str] = []
    real = mrcfile.mmap

    def counting(name, *args, **kwargs):
        opened.append(str(name))
        assert kwargs.get("mode", "r") == "r" and kwargs.get("permissive") is False
        return real(name, *args, **kwargs)

    monkeypatch.setattr(mrcfile, "mmap", counting)
    images = ParticleImages(read_particles(star_path))
    rng = np.random.default_rng(0)
    for _ in range(10):
        images.images(rng.integers(0, 13, size=5))
    images.images(np.arange(13))
    assert len(opened) == 3 and len(set(opened)) == 3
    images.close()


def test_no_file_stays_open_and_pickle(project):
    star_path, stacks = project
    everything = np.concatenate(stacks)
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir())) if fds.is_dir() else None
    images = ParticleImages(read_particles(star_path))
    np.testing.assert_array_equal(images.images([0, 4, 10, 1]), everything[[0, 4, 10, 1]])
    if before is not None:  # Linux: every stack was closed again
        assert len(list(fds.iterdir())) == before
    clone = pickle.loads(pickle.dumps(images))
    np.testing.assert_array_equal(clone.images([12, 2]), everything[[12, 2]])


def test_headers_are_read_once_and_a_shrunk_stack_is_an_input_error(project, monkeypatch):
    """The header is read and checked once per stack; later calls read the pixels from the
    recorded layout, and a stack cut short since then is named, not read past its end."""
    star_path, stacks = project
    everything = np.concatenate(stacks)
    headers: list[str] = []
    real = mrcfile.mmap
    monkeypatch.setattr(
        mrcfile, "mmap", lambda name, **kw: headers.append(name) or real(name, **kw)
    )
    images = ParticleImages(read_particles(star_path))
    for _ in range(3):
        np.testing.assert_array_equal(images.images([0, 12, 5]), everything[[0, 12, 5]])
    assert len(headers) == 3 and images.n_opened == 3
    last = images.stack_path(12)
    last.write_bytes(last.read_bytes()[: 1024 + BOX * BOX * 4])  # header + one image
    with pytest.raises(InputError, match="ends before image") as err:
        images.images([12])
    assert str(last) in str(err.value)


def test_random_batches_over_many_stacks(tmp_path: Path):
    """Batches drawn at random from 60 stacks (most stacks give one image per batch), with
    repeated rows, against the images written."""
    stacks = [_images(5, 100.0 * k) for k in range(60)]
    names = []
    for k, stack in enumerate(stacks):
        write_stack(tmp_path / f"s{k:02d}.mrcs", stack, 1.5)
        names += [f"{i + 1}@s{k:02d}.mrcs" for i in range(len(stack))]
    everything = np.concatenate(stacks)
    rng = np.random.default_rng(3)
    images = ParticleImages(_table(names, tmp_path / "p.star"))
    for _ in range(40):
        order = rng.integers(0, len(names), size=int(rng.integers(1, 90)))
        np.testing.assert_array_equal(images.images(order), everything[order])
    assert images.images([]).shape == (0, 0, 0)
    empty = np.empty((0, BOX, BOX), np.float32)
    assert images.images([], out=empty) is empty


def test_reading_without_preadv(project, monkeypatch):
    """The fallback for systems without preadv (macOS, Windows) reads the same images."""
    star_path, stacks = project
    everything = np.concatenate(stacks)
    monkeypatch.setattr(mrc_io, "_pread_into", mrc_io._seek_read_into)
    images = ParticleImages(read_particles(star_path))
    order = [12, 0, 1, 2, 7, 3]
    np.testing.assert_array_equal(images.images(order), everything[order])


@pytest.fixture()
def two_long_stacks(tmp_path: Path) -> tuple[ParticleImages, np.ndarray]:
    stacks = [_images(40, 1000.0), _images(40, 2000.0)]
    names = []
    for k, stack in enumerate(stacks):
        write_stack(tmp_path / f"s{k}.mrcs", stack, 1.5)
        names += [f"{i + 1}@s{k}.mrcs" for i in range(len(stack))]
    return ParticleImages(_table(names, tmp_path / "p.star")), np.concatenate(stacks)


def test_runs_of_consecutive_images_read_into_a_given_array(two_long_stacks):
    # Long runs are copied as slices, scattered rows by a fancy index: either way the images
    # come in the requested order, into the caller's array when one is given.
    images, everything = two_long_stacks
    runs = np.r_[np.arange(5, 30), 3, 3, np.arange(60, 75), np.arange(0, 5)[::-1], 79, 41]
    scattered = np.random.default_rng(1).permutation(80)[:30]
    for order in (runs, scattered, np.arange(80), np.arange(35, 45)):
        out = np.full((len(order), BOX, BOX), np.nan, dtype=np.float32)
        assert images.images(order, out=out) is out
        np.testing.assert_array_equal(out, everything[order])
        np.testing.assert_array_equal(images.images(order), everything[order])
    with pytest.raises(ValueError, match="C-contiguous float32"):
        images.images(runs, out=np.empty((len(runs), BOX, BOX), dtype=np.float64))


def test_images_from_several_threads_at_once(two_long_stacks, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    images, everything = two_long_stacks
    # A slow file system: threads that all start on the same stack open it once, together.
    real_open = mrc_io.open_stack

    def slow_open(path):
        time.sleep(0.05)
        return real_open(path)

    monkeypatch.setattr(mrc_io, "open_stack", slow_open)
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(images.images, [np.arange(k, 80, 8) for k in range(8)]))
    assert images.n_opened == 2
    np.testing.assert_array_equal(np.concatenate(batches)[:10], everything[0:80:8])
    monkeypatch.setattr(mrc_io, "open_stack", real_open)
    # Many small random reads from 4 threads at once, each call with its own descriptors.
    images = ParticleImages(images.table)
    rng = np.random.default_rng(2)
    orders = [rng.integers(0, 80, size=int(rng.integers(1, 60))) for _ in range(200)]
    orders += [np.arange(lo, lo + 20) for lo in range(0, 60, 3)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(images.images, orders))
    for order, batch in zip(orders, results, strict=True):
        np.testing.assert_array_equal(batch, everything[order])


def test_relion_project_relative_paths(tmp_path: Path):
    # RELION writes paths relative to the project folder, two levels above the job's STAR.
    write_stack(tmp_path / "Extract" / "job005" / "mic1.mrcs", _images(2, 7.0), 1.5)
    star_path = tmp_path / "Refine3D" / "job010" / "run_data.star"
    write_particles(star_path, _table(["000002@Extract/job005/mic1.mrcs"], star_path))
    images = ParticleImages(read_particles(star_path))
    np.testing.assert_array_equal(images[0], _images(2, 7.0)[1])
    # An explicit root wins and is the only place looked at.
    with pytest.raises(InputError):
        ParticleImages(read_particles(star_path), root=tmp_path / "Refine3D")[0]


def test_single_image_files_and_cryosparc_prefix(tmp_path: Path):
    one = _images(1, 5.0)
    with mrcfile.new(tmp_path / "single.mrc") as m:  # a 2D file: one image, no stack axis
        m.set_data(one[0])
        m.voxel_size = 1.5
    write_stack(tmp_path / "J3" / "extract" / "x_particles.mrc", _images(2, 9.0), 1.5)
    names = ["single.mrc", "000002@>J3/extract/x_particles.mrc"]
    images = ParticleImages(_table(names, tmp_path / "p.star"))
    np.testing.assert_array_equal(images.images([0, 1]), np.stack([one[0], _images(2, 9.0)[1]]))


@pytest.mark.parametrize("dtype", [np.float16, np.int16, np.uint16, np.int8])
def test_stacks_of_other_pixel_types_read_as_float32(tmp_path: Path, dtype):
    """MRC modes 12 (float16, RELION 5's ``--float16``), 1, 6 and 0, as other programs write
    them; read into float32 in any order, into ``out=`` too."""
    data = (np.random.default_rng(1).normal(size=(6, BOX, BOX)) * 20).astype(dtype)
    with mrcfile.new(tmp_path / "s.mrcs") as m:  # independent writer
        m.set_data(data)
        m.voxel_size = 1.5
    images = ParticleImages(_table([f"{i}@s.mrcs" for i in range(1, 7)], tmp_path / "p.star"))
    expected = data[[5, 0, 2, 3]].astype(np.float32)
    np.testing.assert_array_equal(images.images([5, 0, 2, 3]), expected)
    out = np.empty((4, BOX, BOX), np.float32)
    np.testing.assert_array_equal(images.images([5, 0, 2, 3], out=out), expected)


def test_reading_one_image_of_a_big_stack_reads_only_that_image(tmp_path: Path):
    # A 1.3 GB stack stored as a sparse file: reading two images costs two images.
    n, box = 20_000, 128
    path = tmp_path / "big.mrcs"
    with mrcfile.new_mmap(path, shape=(n, box, box), mrc_mode=2) as m:
        m.set_image_stack()
        m.voxel_size = 1.5
        m.data[12_345] = 3.0
    if path.stat().st_blocks * 512 > 100e6:
        pytest.skip("file system without sparse files")
    table = _table([f"{i + 1:06d}@big.mrcs" for i in range(n)], tmp_path / "p.star", box=box)
    images = ParticleImages(table)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    batch = images.images([12_345, 0])
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (rss_after - rss_before) * 1024 < 50e6  # far less than the 1.3 GB stack
    np.testing.assert_array_equal(batch[0], 3.0)
    np.testing.assert_array_equal(batch[1], 0.0)


# -- errors -----------------------------------------------------------------------------------


def test_missing_stack_names_row_and_path(project):
    star_path, _ = project
    (star_path.parent / "sub" / "deeper" / "b.mrcs").unlink()
    images = ParticleImages(read_particles(star_path))
    images.images([0, 1])  # other stacks still work
    with pytest.raises(InputError) as err:
        images.images([2, 6])
    msg = str(err.value)
    assert "particle row 7" in msg and "000003@sub/deeper/b.mrcs" in msg
    assert "b.mrcs" in msg and "particles.star" in msg and "not found" in msg


def test_index_out_of_range(project):
    star_path, _ = project
    t = read_particles(star_path)
    t.particles.loc[11, "rlnImageName"] = "7@../elsewhere/c.mrcs"
    with pytest.raises(InputError) as err:
        ParticleImages(t).images([11])
    msg = str(err.value)
    assert "particle row 12" in msg and "c.mrcs" in msg and "has 3 images" in msg
    assert "found 7" in msg


def test_non_square_images(tmp_path: Path):
    write_stack(tmp_path / "rect.mrcs", np.zeros((2, BOX, BOX + 2)), 1.5)
    with pytest.raises(InputError) as err:
        ParticleImages(_table(["1@rect.mrcs"], tmp_path / "p.star"))[0]
    assert "non-square" in str(err.value) and "rect.mrcs" in str(err.value)
    assert "row 1" in str(err.value)


def test_size_disagrees_with_star(tmp_path: Path):
    write_stack(tmp_path / "s.mrcs", _images(2, 0.0), 1.5)
    table = _table(["1@s.mrcs", "2@s.mrcs"], tmp_path / "p.star", box=32)
    with pytest.raises(InputError) as err:
        ParticleImages(table).images([1])
    msg = str(err.value)
    assert "rlnImageSize" in msg and "32 px" in msg and f"{BOX} px" in msg and "row 2" in msg


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_non_finite_pixels_name_the_particle(tmp_path: Path):
    images = _images(3, 0.0)
    images[2, 4, 5] = np.nan
    images[2, 0, 0] = np.inf
    write_stack(tmp_path / "s.mrcs", images, 1.5)
    reader = ParticleImages(_table(["1@s.mrcs", "2@s.mrcs", "3@s.mrcs"], tmp_path / "p.star"))
    reader.images([0, 1])
    with pytest.raises(InputError) as err:
        reader.images([1, 2])
    msg = str(err.value)
    assert "particle row 3" in msg and "3@s.mrcs" in msg and "2 NaN/Inf" in msg
    unchecked = ParticleImages(reader.table, check_finite=False)
    assert np.isnan(unchecked[2]).any()


def test_pixel_size_check(tmp_path: Path):
    write_stack(tmp_path / "s.mrcs", _images(1, 0.0), 1.52)  # 1.3 % off the STAR's 1.5
    write_stack(tmp_path / "close.mrcs", _images(1, 0.0), 1.505)  # 0.3 %: header rounding
    write_stack(tmp_path / "unset.mrcs", _images(1, 0.0), 0.0)
    ParticleImages(_table(["1@close.mrcs", "1@unset.mrcs"], tmp_path / "p.star")).images([0, 1])
    table = _table(["1@s.mrcs"], tmp_path / "p.star")
    with pytest.raises(InputError) as err:
        ParticleImages(table)[0]
    msg = str(err.value)
    assert "rlnImagePixelSize" in msg and "1.5 Å" in msg and "1.52 Å" in msg and "s.mrcs" in msg
    with pytest.warns(UserWarning, match="pixel size"):
        ParticleImages(table, pixel_size_check="warn")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ParticleImages(table, pixel_size_check="ignore")[0]


def test_bad_image_names(tmp_path: Path):
    with pytest.raises(InputError) as err:
        ParticleImages(_table(["1@a.mrcs", "x@b.mrcs"], tmp_path / "p.star"))
    assert "row 2" in str(err.value) and "x@b.mrcs" in str(err.value)
    with pytest.raises(InputError) as err:
        ParticleImages(ParticleTable(make_optics(1, 2, 3, 4, 0.1), pd.DataFrame({"a": [1]})))
    assert "rlnImageName" in str(err.value)


def test_stack_without_index(tmp_path: Path):
    write_stack(tmp_path / "s.mrcs", _images(3, 0.0), 1.5)
    with pytest.raises(InputError) as err:
        ParticleImages(_table(["s.mrcs"], tmp_path / "p.star"))[0]
    assert "without an index" in str(err.value)


def test_fill_image_size(tmp_path: Path):
    write_stack(tmp_path / "s.mrcs", _images(2, 0.0), 1.5)
    t = _table(["1@s.mrcs", "2@s.mrcs"], tmp_path / "p.star")
    t = ParticleTable(
        t.optics.drop(columns=["rlnImageSize", "rlnImageDimensionality"]), t.particles, t.path
    )
    filled = fill_image_size(t)
    assert filled.optics["rlnImageSize"].tolist() == [BOX]
    assert filled.optics["rlnImageDimensionality"].tolist() == [2]


# -- chunked writing ------------------------------------------------------------------------


def test_stack_writer_chunks_and_names(tmp_path: Path):
    images = _images(7, 0.0)
    out = tmp_path / "out"
    with StackWriter(out / "stacks", 0.65, chunk_size=3, relative_to=out) as writer:
        names = writer.append(images[:2]) + writer.append(images[2:5]) + writer.append(images[5:])
    assert names == chunk_image_names(0, 7, 3, subfolder="stacks")
    assert names[0] == "000001@stacks/particles_00000.mrcs"
    assert names[3] == "000001@stacks/particles_00001.mrcs"
    assert names[6] == "000001@stacks/particles_00002.mrcs"
    assert sorted(p.name for p in (out / "stacks").iterdir()) == [
        "particles_00000.mrcs",
        "particles_00001.mrcs",
        "particles_00002.mrcs",
    ]  # no temporary files left behind
    assert existing_chunks(out / "stacks") == [0, 1, 2]
    with mrcfile.open(out / "stacks" / "particles_00002.mrcs") as m:
        assert int(m.header.nz) == 1 and float(m.voxel_size.x) == pytest.approx(0.65)
    star_path = out / "particles.star"
    write_particles(star_path, _table(names, star_path, pixel_A=0.65))
    back = ParticleImages(read_particles(star_path))
    np.testing.assert_array_equal(back.images(np.arange(7)), images)


def test_stack_writer_flushes_full_chunks_at_once_and_resumes(tmp_path: Path):
    images = _images(10, 0.0)
    writer = StackWriter(tmp_path, 1.0, chunk_size=4)
    writer.append(images[:5])
    assert existing_chunks(tmp_path) == [0]  # chunk 0 is complete on disk already
    # An interrupted run: chunk 1 never written. Resume at the chunk boundary.
    resumed = StackWriter(tmp_path, 1.0, chunk_size=4, start_index=4)
    names = resumed.append(images[4:])
    resumed.close()
    assert names[0] == "000001@particles_00001.mrcs" and names[-1] == "000002@particles_00002.mrcs"
    assert existing_chunks(tmp_path) == [0, 1, 2]
    np.testing.assert_array_equal(read_stack(tmp_path / "particles_00001.mrcs")[0], images[4:8])
    with pytest.raises(InputError):
        StackWriter(tmp_path, 1.0, chunk_size=4, start_index=5)


def test_failed_chunk_write_leaves_nothing(tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mrc_io.mrcfile, "new", broken)
    writer = StackWriter(tmp_path, 1.0, chunk_size=2)
    with pytest.raises(OSError):
        writer.append(_images(2, 0.0))
    assert list(tmp_path.iterdir()) == []


def test_relion30_box_size_read_from_stack(tmp_path: Path):
    write_stack(tmp_path / "Particles" / "mic_particles.mrcs", _images(2, 0.0), 1.77)
    (tmp_path / "old.star").write_text(
        "\ndata_\n\nloop_\n_rlnImageName #1\n_rlnVoltage #2\n_rlnSphericalAberration #3\n"
        "_rlnAmplitudeContrast #4\n_rlnMagnification #5\n_rlnDetectorPixelSize #6\n"
        "000001@Particles/mic_particles.mrcs 300.0 2.7 0.1 10000.0 1.77\n"
        "000002@Particles/mic_particles.mrcs 300.0 2.7 0.1 10000.0 1.77\n"
    )
    t = read_particles(tmp_path / "old.star")
    assert t.optics["rlnImageSize"].tolist() == [BOX]
    assert common_image_size_px(t) == BOX
    assert "rlnImageSize" not in read_particles(tmp_path / "old.star", False).optics.columns


# -- read-ahead (deephemnma.io.prefetch) --------------------------------------------------------


@pytest.mark.parametrize("threads, depth, ring", [(0, None, None), (1, 1, False), (1, 1, True),
                                                  (3, None, True), (3, 2, False)])  # fmt: skip
def test_prefetched_batches_come_in_order(two_long_stacks, threads, depth, ring):
    import torch

    from deephemnma.io.prefetch import prefetch_images

    images, everything = two_long_stacks
    rng = np.random.default_rng(3)
    batches = [np.arange(lo, min(lo + 7, 80)) for lo in range(0, 80, 7)]  # last one shorter
    batches += [rng.integers(0, 80, size=5) for _ in range(4)]
    stream = prefetch_images(images, batches, torch.device("cpu"), threads, depth, ring)
    got = list(stream)  # all held at once: a reused buffer must not change what was yielded
    assert len(got) == len(batches)
    for rows, x in zip(batches, got, strict=True):
        assert x.dtype == torch.float32 and x.shape == (len(rows), 1, BOX, BOX)
        np.testing.assert_array_equal(x[:, 0].numpy(), everything[rows])


def test_prefetch_ring_within_its_memory_cap(two_long_stacks, monkeypatch):
    import torch

    from deephemnma.io import prefetch

    images, everything = two_long_stacks
    monkeypatch.setattr(prefetch, "RING_BYTES", 1)  # two buffers, whatever the threads
    batches = [np.arange(lo, min(lo + 9, 80)) for lo in range(0, 80, 9)]
    got = list(prefetch.prefetch_images(images, batches, torch.device("cpu"), 4, ring=True))
    for rows, x in zip(batches, got, strict=True):
        np.testing.assert_array_equal(x[:, 0].numpy(), everything[rows])


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
@pytest.mark.parametrize("threads", [0, 2])
def test_prefetch_raises_at_the_bad_batch_and_stops_cleanly(tmp_path: Path, threads):
    import torch

    from deephemnma.io.prefetch import prefetch_images

    stack = _images(30, 0.0)
    stack[17, 3, 3] = np.nan
    write_stack(tmp_path / "s.mrcs", stack, 1.5)
    images = ParticleImages(_table([f"{i + 1}@s.mrcs" for i in range(30)], tmp_path / "p.star"))
    batches = [np.arange(lo, lo + 5) for lo in range(0, 30, 5)]
    stream = prefetch_images(images, batches, torch.device("cpu"), threads, ring=True)
    assert [len(next(stream)) for _ in range(3)] == [5, 5, 5]
    with pytest.raises(InputError, match="particle row 18"):
        next(stream)
    early = prefetch_images(images, batches[:3], torch.device("cpu"), threads)
    next(early)
    early.close()  # the consumer stops: pending reads are dropped, nothing hangs
