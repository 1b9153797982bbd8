import json

import numpy as np
import pytest

from deephemnma.errors import InputError
from deephemnma.groups import (
    Group,
    GroupSet,
    from_labels,
    points_in_polygon,
    read_groups,
    write_groups,
)


def test_points_in_polygon_square_and_concave():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    pts = np.array([[0.5, 0.5], [1.5, 0.5], [-0.1, 0.2], [0.99, 0.01]])
    assert points_in_polygon(pts, square).tolist() == [True, False, False, True]
    # A "C" shape: the notch is outside.
    c = np.array([[0, 0], [3, 0], [3, 1], [1, 1], [1, 2], [3, 2], [3, 3], [0, 3]], float)
    assert points_in_polygon(np.array([[2, 1.5], [0.5, 1.5], [2, 0.5]]), c).tolist() == [
        False,
        True,
        True,
    ]


def test_group_file_round_trip(tmp_path):
    groups = GroupSet(
        (
            Group("a", indices=np.array([3, 1, 2]), source="kmeans"),
            Group("lasso B", polygon=np.array([[0, 0], [2, 0], [0, 2.0]]), axes=(1, 2)),
        ),
        n_particles=10,
        particles="particles.star",
    )
    path = write_groups(tmp_path / "groups.json", groups)
    back = read_groups(path)
    assert back.names() == ["a", "lasso B"]
    assert back.n_particles == 10 and back.particles == "particles.star"
    coords = np.zeros((10, 3))
    coords[4, 1:] = [0.5, 0.5]
    coords[5, 1:] = [5, 5]
    resolved = back.resolve(coords)
    assert resolved["a"].tolist() == [1, 2, 3]
    assert 4 in resolved["lasso B"] and 5 not in resolved["lasso B"]
    assert back.get("lasso B").axes == (1, 2)


def test_text_group_file(tmp_path):
    path = tmp_path / "my picks.txt"
    path.write_text("4\n2\n9\n")
    groups = read_groups(path)
    assert groups.names() == ["my_picks"]
    assert groups.resolve()["my_picks"].tolist() == [2, 4, 9]


def test_bad_group_files(tmp_path):
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps({"format": "other", "groups": []}))
    with pytest.raises(InputError, match="not a deephemnma group file"):
        read_groups(bad)
    bad.write_text(json.dumps({"format": "deephemnma-groups", "groups": [{"name": "x"}]}))
    with pytest.raises(InputError, match="exactly one of"):
        read_groups(bad)
    bad.write_text(
        json.dumps({"format": "deephemnma-groups", "groups": [{"name": "../x", "indices": []}]})
    )
    with pytest.raises(InputError, match="invalid group name"):
        read_groups(bad)
    out_of_range = GroupSet((Group("g", indices=np.array([12])),), n_particles=10)
    with pytest.raises(InputError, match="out of range"):
        out_of_range.resolve()


def test_from_labels():
    groups = from_labels(np.array([0, 1, -1, 1, 0]), "k", "kmeans")
    assert groups.names() == ["k1", "k2"]
    assert groups.resolve()["k2"].tolist() == [1, 3]
    assert groups.n_particles == 5
