"""Stage 2 network: output layer ↔ Euler angles, label-exact augmentation, overfitting,
checkpoints, resume, normalization at prediction, predict/train CLI (CPU, tiny images)."""

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from deephemnma.cli.main import main
from deephemnma.geometry import angular_error_deg, euler_to_matrix, random_euler_paper
from deephemnma.io.mrc import ParticleImages
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.io.star import (
    amplitudes,
    angles_deg,
    read_particles,
    select,
    shifts_A,
    write_particles,
)
from deephemnma.network.checkpoint import (
    CheckpointWriter,
    load_network,
    read_checkpoint,
    save_checkpoint,
)
from deephemnma.network.data import (
    DIHEDRAL,
    InputNormalization,
    ParticleBatches,
    augment_batch,
    dihedral_images,
    read_splits,
    rotate_images,
    transform_labels,
    translate_images,
)
from deephemnma.network.model import (
    DeepHEMNMANet,
    LossConfig,
    NetworkSpec,
    TargetScaling,
    compute_losses,
    decode,
    fold_batchnorm,
    rotation_target,
)
from deephemnma.network.predict import predict
from deephemnma.network.train import recipe_config, train
from deephemnma.project import atom_model, render_images

TINY = ["--image-size", "32", "--pixel-size", "2.6", "--max-shift", "1", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two OpenMP threads on a shared 2-core machine are several times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "sim"
    assert main(["simulate", "-n", "48", *TINY, "-o", str(folder)]) == 0
    return folder


def _quiet(*_args, **_kwargs):
    pass


def _fast(**overrides):
    recipe = overrides.pop("recipe", "default")
    values = {
        "epochs": 2,
        "batch_size": 16,
        "val": "8",
        "test": "8",
        "precision": "fp32",
        "num_workers": 0,
        **overrides,
    }
    return recipe_config(recipe, **values)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    config = _fast(epochs=1, normalization="dataset", augment="dihedral")
    result = train(tiny / "particles.star", run, config, progress=False, log=_quiet)
    return run, result


# ------------------------------------------------------------------------------------------
# Output layer ↔ rotations


@pytest.mark.parametrize("rotation", ["quaternion", "6d"])
def test_euler_round_trip_through_the_output_layer(rotation):
    angles = random_euler_paper(200, torch.Generator().manual_seed(1))
    angles[:, 1] = angles[:, 1].clamp(1.0, 179.0)  # away from gimbal lock: angles are unique
    matrices = euler_to_matrix(angles)
    spec = NetworkSpec(1, heads=("rotation",), rotation=rotation)
    raw = {"rotation": rotation_target(matrices, rotation).float()}
    out = decode(raw, spec, TargetScaling())
    assert angular_error_deg(out["matrices"], matrices).max() < 1e-3
    wrapped = (out["angles_deg"] - angles + 180) % 360 - 180
    assert wrapped.abs().max() < 1e-3
    # The output layer's scale does not matter, and q ≡ −q.
    scaled = {"rotation": raw["rotation"] * (-3.0 if rotation == "quaternion" else 2.5)}
    again = decode(scaled, spec, TargetScaling())
    assert angular_error_deg(again["matrices"], matrices).max() < 1e-3


def test_rotation_loss_respects_quaternion_sign():
    matrices = euler_to_matrix(random_euler_paper(8, torch.Generator().manual_seed(2)))
    spec = NetworkSpec(1, heads=("rotation",), rotation="quaternion")
    q = rotation_target(matrices, "quaternion")
    for kind in ("chordal", "geodesic"):
        config = LossConfig(rotation=kind)
        loss = compute_losses(
            {"rotation": -q}, {"matrices": matrices}, spec, TargetScaling(), config
        )
        assert float(loss["rotation"]) < 1e-2


def test_psi_changes_by_minus_the_in_plane_angle():
    # CONVENTIONS.md: rotating the image by α (x toward y) is A' = Rz(α) A, i.e. psi' = psi − α.
    angles = torch.tensor([[30.0, 70.0, 110.0]], dtype=torch.float64)
    alpha = 25.0
    c, s = math.cos(math.radians(alpha)), math.sin(math.radians(alpha))
    rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    turned = euler_to_matrix(angles - torch.tensor([0.0, 0.0, alpha], dtype=torch.float64))
    assert torch.allclose(turned, rz @ euler_to_matrix(angles), atol=1e-12)


# ------------------------------------------------------------------------------------------
# Augmentation: checked against the forward model


@pytest.fixture(scope="module")
def ak_model():
    structure = read_structure(package_data_path("4ake_A.pdb"), selection="heavy").centered()
    return atom_model(structure)


def _render(model, matrices, shifts, size=64, pixel=1.3):
    return render_images(model, matrices.float(), size, pixel, shift_A=shifts.float()).double()


def _render_bandlimited(model, matrices, shifts):
    # Rendered at 128² / 0.65 Å, then Fourier-cropped to 64² (as preprocess does).
    from deephemnma.preprocess import fourier_crop

    return fourier_crop(_render(model, matrices, shifts, 128, 0.65), 64)


def _lowpass(images, fraction=0.8):
    n = images.shape[-1]
    k = torch.fft.fftfreq(n, dtype=torch.float64)
    keep = (k[:, None] ** 2 + k[None, :] ** 2).sqrt() < 0.5 * fraction
    return torch.fft.ifft2(torch.fft.fft2(images) * keep).real


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_dihedral_augmentation_is_exact(ak_model):
    angles = torch.tensor([[30.0, 70.0, 110.0], [200.0, 150.0, 10.0]], dtype=torch.float64)
    matrices, shifts = euler_to_matrix(angles), torch.tensor([[1.0, -2.0], [0.5, 0.7]])
    images = _render(ak_model, matrices, shifts)
    for k in range(8):
        element = torch.full((2,), k)
        maps = torch.as_tensor(np.stack(DIHEDRAL), dtype=torch.float64)[element]
        new_matrices, new_shifts = transform_labels(matrices, shifts.double(), maps)
        expected = _render(ak_model, new_matrices, new_shifts)
        got = dihedral_images(images, element)
        assert (got - expected).abs().max() < 1e-4 * images.abs().max(), k


def test_in_plane_rotation_changes_psi_and_rotates_the_shift(ak_model):
    angles = torch.tensor([[30.0, 70.0, 110.0], [200.0, 150.0, 10.0]], dtype=torch.float64)
    matrices, shifts = euler_to_matrix(angles), torch.tensor([[1.0, -2.0], [0.5, 0.7]])
    alpha = torch.tensor([0.3, 2.0], dtype=torch.float64)
    images = _lowpass(_render_bandlimited(ak_model, matrices, shifts))
    turned = _lowpass(rotate_images(images, alpha))
    c, s = torch.cos(alpha), torch.sin(alpha)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    # Expected labels written directly: psi − α and the shift rotated by α.
    new_angles = angles - torch.stack([0 * alpha, 0 * alpha, torch.rad2deg(alpha)], -1)
    new_shifts = (rot @ shifts.double()[..., None])[..., 0]
    expected = _lowpass(_render_bandlimited(ak_model, euler_to_matrix(new_angles), new_shifts))
    wrong = _lowpass(_render_bandlimited(ak_model, euler_to_matrix(new_angles), shifts))
    for b in range(2):
        assert _ncc(turned[b], expected[b]) > 0.999
        assert _ncc(turned[b], wrong[b]) < _ncc(turned[b], expected[b]) - 0.01  # shift not turned
    # transform_labels agrees with the Euler form.
    got_matrices, got_shifts = transform_labels(matrices, shifts.double(), rot)
    assert torch.allclose(got_matrices, euler_to_matrix(new_angles), atol=1e-10)
    assert torch.allclose(got_shifts, new_shifts, atol=1e-12)


def test_translation_moves_the_particle_to_the_new_shift(ak_model):
    angles = torch.tensor([[30.0, 70.0, 110.0], [200.0, 150.0, 10.0]], dtype=torch.float64)
    matrices, shifts = euler_to_matrix(angles), torch.tensor([[1.0, -2.0], [0.5, 0.7]])
    images = _lowpass(_render_bandlimited(ak_model, matrices, shifts))  # 64² at 1.3 Å
    t_px = torch.tensor([[1.7, -0.4], [-2.3, 3.1]], dtype=torch.float64)
    moved = _lowpass(translate_images(images, t_px))
    # I'(p) = I(p − t): the particle moves by t, so its shift becomes s − t (in Å).
    expected = _lowpass(_render_bandlimited(ak_model, matrices, shifts - 1.3 * t_px))
    wrong = _lowpass(_render_bandlimited(ak_model, matrices, shifts + 1.3 * t_px))
    for b in range(2):
        assert _ncc(moved[b], expected[b]) > 0.999
        assert _ncc(moved[b], wrong[b]) < 0.99
    # Integer translations are exact pixel rolls; the mean and the norm are kept.
    whole = translate_images(images, torch.tensor([[3.0, -2.0], [0.0, 5.0]]))
    assert torch.allclose(whole[0], images[0].roll((-2, 3), (0, 1)), atol=1e-9)
    assert torch.allclose(whole[1], images[1].roll((5, 0), (0, 1)), atol=1e-9)


def test_shift_augmentation_deals_the_batch_shifts_out_again(ak_model):
    g = torch.Generator().manual_seed(4)
    angles = random_euler_paper(6, g)
    matrices = euler_to_matrix(angles)
    shifts = (torch.rand(6, 2, generator=g, dtype=torch.float64) - 0.5) * 4
    images = _lowpass(_render_bandlimited(ak_model, matrices, shifts))
    out, new_m, new_s = augment_batch(
        images, matrices, shifts, "shift", torch.Generator().manual_seed(1), pixel_size_A=1.3
    )
    assert torch.equal(new_m, matrices)
    # The same multiset of shifts, dealt to other images.
    assert torch.allclose(new_s[new_s[:, 0].argsort()], shifts[shifts[:, 0].argsort()])
    assert not torch.allclose(new_s, shifts)
    expected = _lowpass(_render_bandlimited(ak_model, matrices, new_s))
    for b in range(6):
        assert _ncc(_lowpass(out)[b], expected[b]) > 0.999
    # Composed with the in-plane rotation: still the image of the new labels.
    out, new_m, new_s = augment_batch(
        images, matrices, shifts, "rotation+shift", torch.Generator().manual_seed(2), 1.3
    )
    expected = _lowpass(_render_bandlimited(ak_model, new_m, new_s))
    for b in range(6):
        assert _ncc(_lowpass(out)[b], expected[b]) > 0.995
    with pytest.raises(ValueError, match="pixel size"):
        augment_batch(images, matrices, shifts, "shift", torch.Generator())


def test_augment_batch_keeps_labels_consistent():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 16, 16, generator=g)
    matrices = euler_to_matrix(random_euler_paper(6, g))
    shifts = torch.randn(6, 2, generator=g, dtype=torch.float64)
    for kind in ("dihedral", "rotation"):
        gen = torch.Generator().manual_seed(3)
        out, new_m, new_s = augment_batch(images, matrices, shifts, kind, gen)
        assert out.shape == images.shape
        eye = torch.eye(3, dtype=torch.float64).expand(6, 3, 3)
        assert torch.allclose(new_m @ new_m.transpose(-1, -2), eye, atol=1e-10)
        assert torch.allclose(torch.linalg.det(new_m), torch.ones(6, dtype=torch.float64))
        assert torch.allclose(new_s.norm(dim=-1), shifts.norm(dim=-1))


def test_default_learning_rate_follows_the_batch_size():
    assert recipe_config("default").lr == pytest.approx(5e-4)  # batch 128
    assert recipe_config("default", batch_size=64).lr == pytest.approx(2.5e-4)
    assert recipe_config("default", batch_size=256).lr == pytest.approx(1e-3)  # as measured
    assert recipe_config("default", batch_size=1024).lr == pytest.approx(1e-3)
    assert recipe_config("default", batch_size=64, lr=1e-3).lr == 1e-3  # given: kept
    assert recipe_config("paper").lr == 1e-5


def test_batches_shard_between_ranks():
    whole = list(ParticleBatches(10, 4, shuffle=True, drop_last=True, seed=5))
    ranks = [list(ParticleBatches(10, 4, True, True, 5, rank=r, world_size=2)) for r in (0, 1)]
    for (full, _), (a, _), (b, _) in zip(whole, *ranks, strict=True):
        assert sorted(np.concatenate([a, b])) == sorted(full)


# ------------------------------------------------------------------------------------------
# Learning and checkpoints


def test_overfits_a_tiny_set():
    torch.manual_seed(0)
    spec = NetworkSpec(3, dropout=0.0)
    model = DeepHEMNMANet(spec)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 32, 32, generator=g)
    targets = {
        "amplitudes": torch.randn(4, 3, generator=g) * 100,
        "matrices": euler_to_matrix(random_euler_paper(4, g)).float(),
        "shifts_A": torch.rand(4, 2, generator=g) * 2 - 1,
    }
    scaling = TargetScaling.fit(targets["amplitudes"].numpy(), targets["shifts_A"].numpy())
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0, fused=True)
    first = None
    for _ in range(30):
        losses = compute_losses(model(x), targets, spec, scaling, LossConfig())
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        first = first if first is not None else float(losses["total"].detach())
    model.eval()  # batch statistics → running statistics: still fits
    with torch.no_grad():
        final = compute_losses(model(x), targets, spec, scaling, LossConfig())
    model.train()
    with torch.no_grad():
        fitted = compute_losses(model(x), targets, spec, scaling, LossConfig())
    assert float(fitted["total"]) < 0.06 * first, (first, float(fitted["total"]))
    assert torch.isfinite(final["total"])


def test_checkpoint_restores_exact_predictions(tmp_path):
    torch.manual_seed(0)
    spec = NetworkSpec(2, rotation="quaternion")
    model = DeepHEMNMANet(spec).eval()
    scaling = TargetScaling((1.0, -2.0), (3.0, 4.0), (0.1, 0.2), (0.5, 0.6))
    norm = InputNormalization("dataset", 0.3, 2.0)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        before = decode(model(norm.apply(x)), spec, scaling)
    state = {
        "spec": spec.to_dict(),
        "model": model.state_dict(),
        "normalization": norm.to_dict(),
        "scaling": scaling.to_dict(),
        "mode_numbers": [7, 8],
        "image_size": 32,
        "pixel_size_A": 2.6,
    }
    crc32 = torch.serialization.get_crc32_options()
    save_checkpoint(tmp_path / "c.pt", state)
    assert torch.serialization.get_crc32_options() == crc32  # the user's setting is kept
    loaded = load_network(tmp_path / "c.pt")
    assert loaded.normalization == norm and loaded.scaling == scaling
    with torch.no_grad():
        after = decode(loaded.model(loaded.normalization.apply(x)), loaded.spec, loaded.scaling)
        folded = fold_batchnorm(loaded.model)(norm.apply(x))
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert torch.allclose(folded["amplitudes"], model(norm.apply(x))["amplitudes"], atol=1e-4)


def test_checkpoint_writer_saves_the_state_of_its_snapshot(tmp_path):
    """Training goes on while a checkpoint is written: the file must hold the state at the
    snapshot, with its strides (channels-last weights), whatever changes afterwards."""
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    state = {"model": {"w": weight, "n": torch.tensor(3)}, "history": [{"loss": 1.0}], "k": "x"}
    writer = CheckpointWriter()
    host = writer.snapshot(state)
    expected = weight.clone()
    weight.add_(1.0)  # the next training step
    state["history"].append({"loss": 0.5})
    writer.write([(tmp_path / "best.pt", host), (tmp_path / "last.pt", {**host, "e": 1})])
    writer.wait()
    for name in ("best.pt", "last.pt"):
        saved = read_checkpoint(tmp_path / name)
        assert torch.equal(saved["model"]["w"], expected)
        assert saved["model"]["w"].stride() == weight.stride()
        assert saved["history"] == [{"loss": 1.0}] and saved["k"] == "x"
    # A second snapshot reuses the buffers: it must not change the first one's file.
    again = writer.snapshot(state)
    assert again["model"]["w"].data_ptr() == host["model"]["w"].data_ptr()
    assert torch.equal(again["model"]["w"], weight)
    # A failed write is reported in the training thread, and leaves no partial file.
    writer.write([(tmp_path / "best.pt" / "c.pt", again)])  # a file is no folder
    with pytest.raises(OSError):
        writer.wait()
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_resume_continues_the_same_loss_curve(tiny, tmp_path):
    config = _fast(epochs=2)
    labels = tiny / "particles.star"
    full = train(labels, tmp_path / "a", config, progress=False, log=_quiet)
    part = train(labels, tmp_path / "b", config, progress=False, log=_quiet, stop_after_epochs=1)
    assert part["epochs_done"] == 1
    rest = train(labels, tmp_path / "b", config, progress=False, log=_quiet)
    assert rest["epochs_this_run"] == 1
    for key in ("train_total", "val_total", "val_angle_deg", "lr"):
        assert [r[key] for r in rest["history"]] == [r[key] for r in full["history"]], key
    # Other settings in the same folder are refused.
    from deephemnma.errors import InputError

    with pytest.raises(InputError, match="other settings"):
        train(labels, tmp_path / "b", _fast(epochs=2, lr=0.1), progress=False, log=_quiet)


def test_resume_on_labels_changed_under_the_same_name_is_refused(tiny, tmp_path):
    # Stage 1 rerun into the same labels file: the checkpoint was trained on other labels.
    from deephemnma.errors import InputError
    from deephemnma.io.star import with_columns

    table = read_particles(tiny / "particles.star")
    labels = tmp_path / "labels.star"
    write_particles(labels, table)
    config = _fast(epochs=2)
    train(labels, tmp_path / "run", config, progress=False, log=_quiet, stop_after_epochs=1)
    column = "deephemnmaAmplitude07"
    write_particles(labels, with_columns(table, {column: table.particles[column] + 1.0}))
    with pytest.raises(InputError, match="other input files") as err:
        train(labels, tmp_path / "run", config, progress=False, log=_quiet)
    assert "(changed: labels file)" in err.value.message


def test_cuda_graphs_setting_is_ignored_off_cuda_and_resumable(tiny, tmp_path):
    """--cuda-graphs only changes how a GPU launches the passes: on the CPU it says it is
    ignored and trains exactly as without, and a run may resume with it switched. The
    default (on where it applies) says nothing where it does not."""
    from deephemnma.network.graphs import graph_training_passes

    labels = tiny / "particles.star"
    messages = []
    graphs = train(labels, tmp_path / "g", _fast(epochs=2, cuda_graphs=True), progress=False,
                   log=messages.append, stop_after_epochs=1)  # fmt: skip
    assert any("--cuda-graphs: ignored" in m for m in messages)
    quiet = []
    plain = train(labels, tmp_path / "p", _fast(epochs=2), progress=False, log=quiet.append)
    assert quiet and not any("cuda-graphs" in m for m in quiet)
    rest = train(labels, tmp_path / "g", _fast(epochs=2, cuda_graphs=False), progress=False,
                 log=_quiet)  # fmt: skip
    assert graphs["epochs_done"] == 1 and rest["epochs_done"] == 2
    for key in ("train_total", "val_total"):
        assert [r[key] for r in rest["history"]] == [r[key] for r in plain["history"]], key
    model = DeepHEMNMANet(NetworkSpec(3))
    before = model.forward
    assert not graph_training_passes(model, 4, 32, channels_last=False, bf16=False,
                                     log=messages.append)  # fmt: skip
    assert model.forward == before


def test_time_budget_plans_the_epochs_without_changing_the_training(tiny, tmp_path):
    labels = tiny / "particles.star"
    # A generous budget: the cap (3 epochs) fits; the timing steps must leave no trace, so
    # the run equals a plain 3-epoch run.
    budget = train(labels, tmp_path / "b", _fast(epochs=3, max_minutes=5.0), progress=False,
                   log=_quiet)  # fmt: skip
    plain = train(labels, tmp_path / "p", _fast(epochs=3), progress=False, log=_quiet)
    assert budget["epochs_done"] == 3
    for key in ("train_total", "val_total", "lr"):
        a = [r[key] for r in budget["history"]]
        b = [r[key] for r in plain["history"]]
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=key)
    # A budget spent before training starts still trains one epoch, with the whole schedule.
    short = train(labels, tmp_path / "s", _fast(epochs=50, max_minutes=1e-4), progress=False,
                  log=_quiet)  # fmt: skip
    assert short["epochs_done"] == 1
    assert read_checkpoint(tmp_path / "s" / "checkpoint.pt")["config"]["epochs"] == 1
    # A resumed budget run keeps its plan (the CLI's --epochs default does not matter).
    part = train(labels, tmp_path / "r", _fast(epochs=3, max_minutes=5.0), progress=False,
                 log=_quiet, stop_after_epochs=1)  # fmt: skip
    assert part["epochs_done"] == 1
    rest = train(labels, tmp_path / "r", _fast(epochs=60, max_minutes=5.0), progress=False,
                 log=_quiet)  # fmt: skip
    assert rest["epochs_done"] == 3


def test_preloaded_images_train_exactly_as_the_streamed_ones(tiny, tmp_path):
    # A GPU trains from images loaded onto it once; the batches, their augmentation and
    # hence the loss curve must be those the loader processes would have served.
    labels = tiny / "particles.star"
    config = _fast(epochs=2, augment="rotation", normalization="per-image")
    streamed = train(labels, tmp_path / "s", replace(config, preload="no", num_workers=1),
                     progress=False, log=_quiet)  # fmt: skip
    preloaded = train(labels, tmp_path / "p", replace(config, preload="yes"), progress=False,
                      log=_quiet)  # fmt: skip
    for key in ("train_total", "val_total", "val_angle_deg", "val_amp_mae"):
        a = [r[key] for r in streamed["history"]]
        b = [r[key] for r in preloaded["history"]]
        np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=key)


def test_prediction_uses_the_training_normalization(tiny, trained, tmp_path):
    run, result = trained
    state = read_checkpoint(run / "best.pt")
    table = read_particles(tiny / "particles.star")
    rows = read_splits(run)["train"]
    train_images = ParticleImages(table).images(rows).astype(np.float64)
    assert state["normalization"]["mode"] == "dataset"
    assert state["normalization"]["mean"] == pytest.approx(train_images.mean(), rel=1e-6)
    assert state["normalization"]["std"] == pytest.approx(train_images.std(), rel=1e-6)
    _, q = amplitudes(read_particles(tiny / "particles.star"))
    assert state["scaling"]["amplitude_mean"] == pytest.approx(q[rows].mean(0).tolist())

    val_star = run / "splits" / "val.star"
    out = predict(val_star, run, tmp_path / "pred.star", precision="fp32", progress=False)
    pred = read_particles(out["out"])
    # The same computation by hand with the stored statistics.
    loaded = load_network(run / "best.pt")
    val = read_particles(val_star)
    x = torch.from_numpy(ParticleImages(val).images(np.arange(len(val))))
    mean, std = state["normalization"]["mean"], state["normalization"]["std"]
    with torch.no_grad():
        manual = decode(loaded.model(((x - mean) / std)[:, None]), loaded.spec, loaded.scaling)
        per_image = decode(
            loaded.model(InputNormalization("per-image").apply(x)[:, None]),
            loaded.spec,
            loaded.scaling,
        )
    got_a = torch.as_tensor(amplitudes(pred)[1])
    assert torch.allclose(got_a, manual["amplitudes"].double(), atol=1e-3 * 200)
    assert not torch.allclose(got_a, per_image["amplitudes"].double(), atol=1e-3 * 200)
    got_m = euler_to_matrix(torch.as_tensor(angles_deg(pred)))
    assert angular_error_deg(got_m, manual["matrices"]).max() < 0.05
    assert np.allclose(shifts_A(pred), manual["shifts_A"].numpy(), atol=1e-3)
    # Columns other than the predictions are kept.
    assert list(pred.particles.columns) == list(val.particles.columns)
    assert (pred.particles["rlnDefocusU"] == val.particles["rlnDefocusU"]).all()


def test_predict_preprocesses_raw_full_size_particles_on_the_fly(tiny, trained, tmp_path):
    # A network trained on phase-flipped, downsampled images predicts the raw full-size
    # particles as if they had been preprocessed: no preprocessed copy of a million images.
    raw = tmp_path / "raw"
    options = ["--image-size", "64", "--pixel-size", "1.3", "--max-shift", "1", "--quiet"]
    assert main(["simulate", "-n", "40", *options, "--seed", "3", "-o", str(raw)]) == 0
    pre = tmp_path / "pre"
    command = ["preprocess", str(raw / "particles.star"), "--size", "32", "-o", str(pre)]
    assert main([*command, "--quiet"]) == 0
    run = tmp_path / "run"
    train(pre / "particles.star", run, _fast(epochs=1), progress=False, log=_quiet)
    assert read_checkpoint(run / "best.pt")["phase_flipped"] is True

    kw = {"precision": "fp32", "progress": False, "workers": 0}
    on_copy = read_particles(predict(pre / "particles.star", run, tmp_path / "a.star", **kw)["out"])
    on_raw = read_particles(predict(raw / "particles.star", run, tmp_path / "b.star", **kw)["out"])
    np.testing.assert_allclose(amplitudes(on_raw)[1], amplitudes(on_copy)[1], atol=0.05)
    errors = angular_error_deg(
        euler_to_matrix(torch.as_tensor(angles_deg(on_raw))),
        euler_to_matrix(torch.as_tensor(angles_deg(on_copy))),
    )
    assert float(errors.max()) < 0.05
    np.testing.assert_allclose(shifts_A(on_raw), shifts_A(on_copy), atol=1e-3)

    # The output points at the images it was given: the full-size ones.
    def files(table, folder):
        return [(folder / n.split("@")[1]).resolve() for n in table.particles["rlnImageName"]]

    assert files(on_raw, tmp_path) == files(read_particles(raw / "particles.star"), raw)

    from deephemnma.errors import InputError

    # Images the network never saw the like of are refused, not silently mispredicted.
    with pytest.raises(InputError, match="phase-flipped but the network was trained on raw"):
        predict(pre / "particles.star", trained[0], tmp_path / "c.star", **kw)
    other = tmp_path / "other"
    options[3] = "1.0"  # 64 px at 1.0 Å: another physical box than 32 px at 2.6 Å
    assert main(["simulate", "-n", "4", *options, "-o", str(other)]) == 0
    with pytest.raises(InputError, match="cannot be cropped"):
        predict(other / "particles.star", run, tmp_path / "d.star", **kw)


def test_predict_resumes_and_streams_in_chunks(trained, tmp_path):
    run, _ = trained
    val_star = run / "splits" / "val.star"
    kw = {"precision": "fp32", "progress": False, "batch_size": 3, "chunk_size": 3}
    whole = predict(val_star, run, tmp_path / "a.star", **kw)
    cut = predict(val_star, run, tmp_path / "b.star", stop_after_chunks=1, **kw)
    assert cut["out"] is None and cut["chunks_computed"] == 1
    again = predict(val_star, run, tmp_path / "b.star", **kw)
    assert again["chunks_reused"] == 1 and again["chunks_computed"] == whole["chunks_computed"] - 1
    assert (tmp_path / "a.star").read_text() == (tmp_path / "b.star").read_text()
    assert not (tmp_path / "b.star.parts").exists()


def test_predict_recomputes_when_the_particles_change_under_the_same_name(trained, tmp_path):
    # Re-extracted particles written over the old STAR: the finished chunks of the old file
    # must not be taken for the new one's.
    run, _ = trained
    val = read_particles(run / "splits" / "val.star")
    star = tmp_path / "particles.star"
    write_particles(star, val)
    kw = {"precision": "fp32", "progress": False, "batch_size": 3, "chunk_size": 3}
    assert predict(star, run, tmp_path / "out.star", stop_after_chunks=1, **kw)["out"] is None
    write_particles(star, select(val, np.arange(len(val))[::-1]))
    again = predict(star, run, tmp_path / "out.star", **kw)
    assert again["chunks_reused"] == 0
    predict(star, run, tmp_path / "fresh.star", **kw)
    assert (tmp_path / "out.star").read_text() == (tmp_path / "fresh.star").read_text()


@pytest.mark.parametrize("reader", ["threads", "processes"])
def test_predict_in_chunks_with_readers_matches_one_pass(trained, tmp_path, reader):
    # One reader serves every chunk; batches must not straddle chunks, and each chunk's part
    # must hold its own rows, whatever the batch and chunk sizes.
    run, _ = trained
    val_star = run / "splits" / "val.star"
    kw = {"precision": "fp32", "progress": False}
    one = predict(val_star, run, tmp_path / "one.star", chunk_size=10**6, batch_size=64, **kw)
    many = predict(
        val_star, run, tmp_path / "many.star", chunk_size=5, batch_size=3, workers=2,
        reader=reader, **kw,
    )  # fmt: skip
    assert one["chunks_computed"] == 1 and many["chunks_computed"] == -(-one["n"] // 5)
    a, b = read_particles(tmp_path / "one.star"), read_particles(tmp_path / "many.star")
    rot_a, rot_b = (euler_to_matrix(torch.as_tensor(angles_deg(t))) for t in (a, b))
    assert angular_error_deg(rot_a, rot_b).max() < 1e-3
    assert np.allclose(shifts_A(a), shifts_A(b), atol=1e-5)
    assert np.allclose(amplitudes(a)[1], amplitudes(b)[1], atol=1e-4)


@pytest.mark.parametrize("tta", [False, True])
def test_short_batches_padded_as_on_a_gpu_predict_the_same(trained, tmp_path, monkeypatch, tta):
    # On a GPU the last batch of a chunk is padded to the full batch (one input shape for
    # cuDNN's benchmark mode); the padding must not change any prediction.
    import importlib

    predict_module = importlib.import_module("deephemnma.network.predict")
    run, _ = trained
    val_star = run / "splits" / "val.star"
    kw = {"precision": "fp32", "progress": False, "chunk_size": 5, "batch_size": 3, "tta": tta}
    predict(val_star, run, tmp_path / "plain.star", **kw)
    monkeypatch.setattr(predict_module, "_pad_batches", lambda device: True)
    predict(val_star, run, tmp_path / "padded.star", **kw)
    a, b = read_particles(tmp_path / "plain.star"), read_particles(tmp_path / "padded.star")
    rot_a, rot_b = (euler_to_matrix(torch.as_tensor(angles_deg(t))) for t in (a, b))
    assert angular_error_deg(rot_a, rot_b).max() < 1e-3
    assert np.allclose(shifts_A(a), shifts_A(b), atol=1e-5)
    assert np.allclose(amplitudes(a)[1], amplitudes(b)[1], atol=1e-4)


def test_predict_with_tta_is_equivariant_and_writes_the_spread(trained, tmp_path):
    # Rotating every particle image by 90° must rotate the TTA predictions exactly
    # (psi − 90°, shifts turned): the 8 copies of the turned images are the same 8 images.
    from deephemnma.io.mrc import write_stack
    from deephemnma.network.tta import SPREAD_LABEL

    run, _ = trained
    val = read_particles(run / "splits" / "val.star")
    images = torch.from_numpy(ParticleImages(val).images(np.arange(len(val))))
    turned = dihedral_images(images, torch.full((len(val),), 1)).numpy()
    write_stack(tmp_path / "turned.mrcs", turned, pixel_size_A=2.6)
    table = replace(val, particles=val.particles.copy(), path=None)
    table.particles["rlnImageName"] = [f"{i + 1:06d}@turned.mrcs" for i in range(len(val))]
    write_particles(tmp_path / "turned.star", table)

    kw = {"precision": "fp32", "progress": False, "tta": True}
    maps = torch.as_tensor(DIHEDRAL[1], dtype=torch.float64).expand(len(val), 2, 2)

    def plain_and_turned(tag: str, **options):
        """Predictions of the images and of the turned ones; the rotations of the second
        must be those of the first turned; returns both and the first's shifts turned."""
        result = predict(val.path, run, tmp_path / f"{tag}_plain.star", **kw, **options)
        turned_out = predict(tmp_path / "turned.star", run, tmp_path / f"{tag}_turned.star",
                             **kw, **options)["out"]  # fmt: skip
        plain, moved = read_particles(result["out"]), read_particles(turned_out)
        want_m, want_s = transform_labels(
            euler_to_matrix(torch.as_tensor(angles_deg(plain))),
            torch.as_tensor(shifts_A(plain)),
            maps,
        )
        got_m = euler_to_matrix(torch.as_tensor(angles_deg(moved)))
        assert float(angular_error_deg(got_m, want_m).max()) < 0.01, tag
        return result, plain, moved, want_s

    _, plain, moved, want_s = plain_and_turned("d4")
    np.testing.assert_allclose(shifts_A(moved), want_s.numpy(), atol=1e-4)
    np.testing.assert_allclose(amplitudes(moved)[1], amplitudes(plain)[1], atol=1e-3)
    spread = plain.particles[SPREAD_LABEL].to_numpy()
    assert ((spread >= 0) & (spread <= 180)).all()
    np.testing.assert_allclose(moved.particles[SPREAD_LABEL].to_numpy(), spread, atol=1e-3)
    # Without TTA: no spread column, and other predictions (the consensus is not one copy's).
    single = read_particles(predict(val.path, run, tmp_path / "c.star", precision="fp32",
                                    progress=False)["out"])  # fmt: skip
    assert SPREAD_LABEL not in single.particles.columns
    assert not np.allclose(angles_deg(single), angles_deg(plain), atol=1e-3)
    # 16 copies (also turned by 45°): still exactly equivariant under D4, another consensus.
    result, plain16, _, _ = plain_and_turned("d8", tta_turns=2)
    assert result["tta_copies"] == 16
    assert not np.allclose(angles_deg(plain16), angles_deg(plain), atol=1e-3)
    # 40 copies (each also moved by ±1 pixel along x and y): still exactly equivariant.
    result, plain40, moved40, want40_s = plain_and_turned("shifted", tta_shift_px=1)
    assert result["tta_copies"] == 40
    np.testing.assert_allclose(shifts_A(moved40), want40_s.numpy(), atol=1e-4)
    assert not np.allclose(angles_deg(plain40), angles_deg(plain), atol=1e-3)


def test_cli_train_predict_evaluate(tiny, tmp_path):
    run = tmp_path / "run"
    labels = str(tiny / "particles.star")
    common = ["--epochs", "1", "--batch-size", "16", "--val", "8", "--test", "8"]
    args = ["train", "--labels", labels, "--modes", str(tiny / "modes.npz"), "-o", str(run)]
    assert main([*args, *common, "--precision", "fp32", "--threads", "1", "--quiet"]) == 0
    assert (run / "best.pt").exists() and (run / "history.csv").exists()
    assert (run / "curves.png").exists() and (run / "splits" / "test.star").exists()
    pred = tmp_path / "pred.star"
    test_star = str(run / "splits" / "test.star")
    args = ["predict", "--particles", test_star, "--checkpoint", str(run), "-o", str(pred)]
    assert main([*args, "--quiet", "--precision", "fp32", "--tta", "--tta-turns", "2"]) == 0
    out = tmp_path / "eval"
    args = ["evaluate", str(pred), "--truth", labels, "--modes", str(tiny / "modes.npz")]
    assert main([*args, "-o", str(out)]) == 0
    assert (out / "helix.png").exists()
    assert "pose spread (TTA)" in (out / "table.txt").read_text()  # predicted with --tta

    # Bad input: exit code 2, no traceback.
    assert main(["train", "--labels", str(tmp_path / "no.star"), "-o", str(run)]) == 2
    assert main(["train", "--labels", labels, "-o", str(run), "--recipe", "nope"]) == 2
    table = read_particles(test_star)
    table.optics["rlnImageSize"] = 64
    write_particles(tmp_path / "big.star", table)
    args = ["predict", "--particles", str(tmp_path / "big.star"), "--checkpoint", str(run)]
    assert main([*args, "-o", str(tmp_path / "x.star")]) == 2
    args = ["predict", "--particles", test_star, "--checkpoint", str(run), "-o", str(pred)]
    assert main([*args, "--reader", "fibres"]) == 2


@pytest.mark.slow
def test_paper_recipe_trains_three_networks(tiny, tmp_path):
    config = _fast(recipe="paper", epochs=1, batch_size=8, val="8", test="32")
    assert config.separate and config.rotation == "quaternion" and config.lr == 1e-5
    result = train(tiny / "particles.star", tmp_path / "p", config, progress=False, log=_quiet)
    state = read_checkpoint(tmp_path / "p" / "best.pt")
    assert {k.split(".")[1] for k in state["model"] if k.startswith("trunks.")} == {
        "amplitudes",
        "rotation",
        "shifts",
    }
    assert math.isfinite(result["history"][-1]["val_total"])


# ------------------------------------------------------------------------------------------
# Slow: real kill -9, and DDP on CPU with gloo


def _train_cmd(labels, out, epochs):
    return [
        sys.executable, "-m", "deephemnma", "train", "--labels", str(labels), "-o", str(out),
        "--epochs", str(epochs), "--batch-size", "16", "--val", "8", "--test", "8",
        "--precision", "fp32", "--threads", "1", "--quiet",
    ]  # fmt: skip


@pytest.mark.slow
def test_resume_after_kill_9(tiny, tmp_path):
    labels = tiny / "particles.star"
    reference = subprocess.run(_train_cmd(labels, tmp_path / "a", 3), capture_output=True)
    assert reference.returncode == 0, reference.stderr.decode()
    proc = subprocess.Popen(_train_cmd(labels, tmp_path / "b", 3))
    deadline = time.time() + 120
    while time.time() < deadline:
        if (tmp_path / "b" / "history.csv").exists():
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(_train_cmd(labels, tmp_path / "b", 3), capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    a = (tmp_path / "a" / "history.csv").read_text().splitlines()
    b = (tmp_path / "b" / "history.csv").read_text().splitlines()
    column = a[0].split(",").index("val_total")
    assert [r.split(",")[column] for r in a] == [r.split(",")[column] for r in b]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny, tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), "-m", "deephemnma", "train",
        "--labels", str(tiny / "particles.star"), "-o", str(tmp_path / "ddp"),
        "--epochs", "1", "--batch-size", "16", "--val", "8", "--test", "8",
        "--precision", "fp32", "--threads", "1", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    state = read_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert state["epoch"] == 1 and math.isfinite(state["history"][0]["train_total"])


def test_predict_refine_hybrid_inference(tiny, trained, tmp_path):
    run, _ = trained
    val_star = run / "splits" / "val.star"
    out = tmp_path / "hybrid.star"
    args = ["predict", "--particles", str(val_star), "--checkpoint", str(run), "-o", str(out)]
    args += ["--refine", "--modes", str(tiny / "modes.npz")]
    args += ["--reference", str(tiny / "reference.pdb"), "--refine-steps", "3,2"]
    args += ["--refine-workers", "1", "--precision", "fp32", "--threads", "1", "--quiet"]
    assert main(args) == 0
    network = read_particles(tmp_path / "hybrid_network.star").particles
    refined = read_particles(out).particles
    assert len(refined) == len(network) == len(read_particles(val_star))
    # The network's estimates are kept beside the refined ones; no score went down.
    np.testing.assert_array_equal(refined["deephemnmaStartAngleRot"], network["rlnAngleRot"])
    assert (refined["deephemnmaScore"] >= refined["deephemnmaStartScore"]).all()
    before = out.read_text()
    assert main(args) == 0  # a rerun reuses both steps and writes the same file
    assert out.read_text() == before
