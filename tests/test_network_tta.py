"""Test-time augmentation over D4 (and D8 with turns): equivariance, robust consensus, spread."""

import numpy as np
import pytest
import torch

from deephemnma.geometry import angular_error_deg, euler_to_matrix, random_euler_paper
from deephemnma.network.data import DIHEDRAL, dihedral_images, transform_labels
from deephemnma.network.model import rotation_from_output
from deephemnma.network.tta import consensus, copy_maps, dihedral_predict, project_to_so3


def _arbitrary_predictor(size: int, seed: int = 0):
    """A fixed, far from equivariant map of images to amplitudes, rotations and shifts (a
    random linear layer on the pixels), standing in for a partly trained network."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(size * size, 11, generator=g, dtype=torch.float64)

    def predict_one(images):
        features = images.reshape(len(images), -1).double() @ weights
        return {
            "amplitudes": features[:, :3] * 10,
            "matrices": rotation_from_output(features[:, 3:9], "6d"),
            "shifts_A": features[:, 9:11] * 0.1,
        }

    return predict_one


BLOB_CENTERS = torch.tensor([[3.0, -5.0], [-6.5, 2.25], [0.0, 7.0]], dtype=torch.float64)


def _blobs_and_centroid(n: int):
    """(3, n, n) Gaussian blobs at :data:`BLOB_CENTERS` (x, y pixels from ``n//2``), and a
    function giving the centroid (B, 2) of images (B, 1, n, n)."""
    y, x = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    c = BLOB_CENTERS
    blobs = torch.exp(-((x - c[:, 0, None, None]) ** 2 + (y - c[:, 1, None, None]) ** 2) / 8.0)

    def centroid(images):
        w = images[:, 0].double()
        position = torch.stack([(w * x).sum((-1, -2)), (w * y).sum((-1, -2))], -1)
        return position / w.sum((-1, -2))[:, None]

    return blobs, centroid


@pytest.mark.parametrize(("turns", "shift_px"), [(1, 0), (2, 0), (1, 2)])
def test_consensus_is_exactly_equivariant(turns, shift_px):
    # With turns, the copies of g·I are still those of I in another order: each is turned
    # after its dihedral permutation, and permutations compose exactly; so with shifts, whose
    # offsets are a D4-invariant set.
    g = torch.Generator().manual_seed(1)
    images = torch.randn(5, 1, 16, 16, generator=g, dtype=torch.float64)
    predict_one = _arbitrary_predictor(16)
    kw = {"turns": turns, "shift_px": shift_px, "pixel_size_A": 1.3}
    plain = dihedral_predict(predict_one, images, **kw)
    maps = torch.as_tensor(np.stack(DIHEDRAL), dtype=torch.float64)
    for element in range(8):
        which = torch.full((5,), element)
        moved = dihedral_predict(predict_one, dihedral_images(images[:, 0], which)[:, None], **kw)
        want_m, want_s = transform_labels(plain["matrices"], plain["shifts_A"], maps[which])
        assert angular_error_deg(moved["matrices"], want_m).max() < 1e-5, element
        assert torch.allclose(moved["shifts_A"], want_s, atol=1e-10), element
        assert torch.allclose(moved["amplitudes"], plain["amplitudes"], atol=1e-10), element
        assert torch.allclose(moved["spread_deg"], plain["spread_deg"], atol=1e-5), element
    # The copies of this predictor disagree: a large spread, and a consensus that is not the
    # plain prediction.
    assert float(plain["spread_deg"].min()) > 10
    single = predict_one(images)
    assert angular_error_deg(plain["matrices"], single["matrices"]).max() > 1


def test_a_majority_of_agreeing_copies_wins_over_gross_outliers():
    g = torch.Generator().manual_seed(2)
    truth = euler_to_matrix(random_euler_paper(4, g))
    outliers = euler_to_matrix(random_euler_paper(12, g)).reshape(3, 4, 3, 3)
    near = truth @ euler_to_matrix(torch.tensor([[0.0, 0.3, 0.0]], dtype=torch.float64))
    copies = torch.cat([truth.expand(4, 4, 3, 3), near[None], outliers])  # 5 close, 3 wrong
    amplitudes = torch.tensor([1.0, 1.0, 1.0, 1.1, 0.9, 80.0, -70.0, 95.0])[:, None, None]
    out = consensus({"matrices": copies, "amplitudes": amplitudes.expand(8, 4, 2)})
    assert angular_error_deg(out["matrices"], truth).max() < 0.05
    assert torch.allclose(out["amplitudes"], torch.ones(4, 2, dtype=torch.float64))
    assert torch.allclose(out["spread_deg"], torch.zeros(4, dtype=torch.float64), atol=0.2)
    mean = project_to_so3(copies.mean(0))  # the plain chordal mean is pulled away
    assert angular_error_deg(mean, truth).max() > 1


def test_projection_onto_rotations():
    g = torch.Generator().manual_seed(3)
    rotations = euler_to_matrix(random_euler_paper(6, g))
    noisy = rotations + 0.01 * torch.randn(6, 3, 3, generator=g, dtype=torch.float64)
    projected = project_to_so3(noisy)
    eye = torch.eye(3, dtype=torch.float64).expand(6, 3, 3)
    assert torch.allclose(projected @ projected.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.det(projected), torch.ones(6, dtype=torch.float64))
    assert angular_error_deg(projected, rotations).max() < 2
    assert torch.allclose(project_to_so3(rotations), rotations, atol=1e-12)
    reflected = -rotations  # det −1: the nearest rotation, not the reflection
    assert torch.allclose(torch.det(project_to_so3(reflected)), torch.ones(6, dtype=torch.float64))


def test_turned_copies_form_d8_and_map_labels_back_exactly():
    maps = copy_maps(2)
    assert np.array_equal(copy_maps(1), np.stack(DIHEDRAL))
    assert maps.shape == (16, 2, 2)
    assert np.allclose(maps @ maps.transpose(0, 2, 1), np.eye(2), atol=1e-12)
    flat = maps.reshape(16, 4)
    assert np.abs(flat[:, None] - flat[None]).sum(-1)[~np.eye(16, dtype=bool)].min() > 0.1
    for a in maps:  # closed under composition: the dihedral group of order 16
        for b in maps:
            assert np.abs(flat - (a @ b).reshape(4)).sum(-1).min() < 1e-12
    # A predictor that reads each image's centroid (an exactly covariant shift: s' = L s)
    # must get the same answer back from all 16 copies, the turned ones included.
    blobs, centroid = _blobs_and_centroid(32)

    def predict_one(images):
        return {"shifts_A": centroid(images)}

    out = dihedral_predict(predict_one, blobs[:, None], turns=2)
    assert torch.allclose(out["shifts_A"], BLOB_CENTERS, atol=1e-3)


def test_shifted_copies_map_their_shift_estimates_back(monkeypatch):
    # A predictor that reads each particle's origin off the image (minus its centroid, in Å):
    # every one of the 8 × 5 copies must give the original image's origin back. The consensus
    # (a median) would hide a wrong sign on a minority of copies, so the copies are checked.
    import deephemnma.network.tta as tta

    pixel_A = 1.3
    blobs, centroid = _blobs_and_centroid(48)  # room for the moved blobs: no tail wraps

    def origin(images):
        return {"shifts_A": -pixel_A * centroid(images)}

    seen = {}

    def keep(per_copy):
        seen.update(per_copy)
        return consensus(per_copy)

    monkeypatch.setattr(tta, "consensus", keep)
    assert tta.copy_offsets_px(3) == [(0, 0), (3, 0), (-3, 0), (0, 3), (0, -3)]
    out = dihedral_predict(origin, blobs[:, None], shift_px=3, pixel_size_A=pixel_A)
    assert seen["shifts_A"].shape == (40, 3, 2)
    want = -pixel_A * BLOB_CENTERS
    assert torch.allclose(seen["shifts_A"], want.expand(40, 3, 2), atol=1e-3)
    assert torch.allclose(out["shifts_A"], want, atol=1e-3)
