"""The explorer's HTTP API with FastAPI's test client: groups, jobs, export, safety."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from deephemnma.explore.app import create_app  # noqa: E402
from deephemnma.explore.density import point_density  # noqa: E402
from deephemnma.explore.groupstore import resolve_fast  # noqa: E402
from deephemnma.explore.project import load_space, project_paths  # noqa: E402
from deephemnma.explore.synthetic import standin_command, write_project  # noqa: E402
from deephemnma.groups import Group, points_in_polygon, read_groups  # noqa: E402
from deephemnma.io.star import read_particles  # noqa: E402

N = 3000
WRITE = {"X-Requested-By": "test"}
SQUARE = [[-200, -200], [200, -200], [200, 200], [-200, 200]]  # holds every point
TRIANGLE = [[0, 0], [150, 0], [0, 150]]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("explore") / "project", n=N)


@pytest.fixture
def project(template, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(template, tmp_path / "project"))


def make_client(project: Path, **kwargs) -> TestClient:
    app = create_app(project_paths(project), **kwargs)
    return TestClient(app, headers=WRITE, raise_server_exceptions=False)


@pytest.fixture
def client(project):
    with make_client(project, command=standin_command(delay_s=1.0)) as c:
        yield c


def wait_for(client, name, states=("done", "failed"), timeout_s=60.0) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = client.get(f"/api/groups/{name}/reconstruct").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {name} did not reach {states}: {job}")


# ---- reading


def test_info_and_binary_columns(client, project):
    info = client.get("/api/info").json()
    space = load_space(project / "analyze" / "space.npz")
    assert info["n_points"] == N and info["n_axes"] == 3
    assert info["has_truth"] and info["has_modes"] and info["has_particles"]
    ids = [c["id"] for c in info["colors"]]
    assert ids[:3] == ["density", "score", "source"] and "truth:7" in ids
    response = client.get("/api/pc/1")
    assert response.headers["content-type"] == "application/octet-stream"
    np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), space.coords[:, 1])
    for name in ("density", "score", "source", "truth:8", "amplitude:9"):
        values = np.frombuffer(client.get("/api/color", params={"name": name}).content, "<f4")
        assert values.shape == (N,), name
    source = np.frombuffer(client.get("/api/color", params={"name": "source"}).content, "<f4")
    np.testing.assert_array_equal(source, space.source)


def test_density_is_higher_in_a_cluster():
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 0.1, (5000, 2)), rng.uniform(-5, 5, (500, 2))])
    density = point_density(xy)
    assert density.dtype == np.float32 and np.nanmax(density) == pytest.approx(1.0)
    assert np.median(density[:5000]) > np.median(density[5000:]) + 0.3


def test_fast_polygon_resolution_matches_groups_module(project):
    space = load_space(project / "analyze" / "space.npz")
    polygon = np.array([[0, 0], [120, 10], [60, 90], [10, 40]], dtype=float)
    group = Group("g", polygon=polygon, axes=(0, 2))
    np.testing.assert_array_equal(resolve_fast(group, space.coords), group.resolve(space.coords))


# ---- groups CRUD


def test_groups_create_rename_replace_delete(client, project):
    groups = client.get("/api/groups").json()["groups"]
    assert [g["name"] for g in groups] == ["bin 1"] and groups[0]["kind"] == "indices"

    created = client.post("/api/groups", json={"name": "open A", "polygon": TRIANGLE})
    assert created.status_code == 201, created.text
    record = created.json()
    space = load_space(project / "analyze" / "space.npz")
    inside = points_in_polygon(space.coords[:, :2], np.array(TRIANGLE))
    assert record["count"] == inside.sum() > 0
    expected = space.amplitudes[inside].mean(0)
    np.testing.assert_allclose(record["centroid"]["amplitudes"], expected, rtol=1e-5)

    # Saved in the group file that analyze/reconstruct read, as a manual polygon group.
    on_disk = read_groups(project / "analyze" / "groups.json")
    group = on_disk.get("open A")
    assert group.source == "manual" and group.axes == (0, 1)
    np.testing.assert_array_equal(on_disk.resolve(space.coords)["open A"], np.flatnonzero(inside))
    assert client.post("/api/groups", json={"name": "open A", "polygon": SQUARE}).status_code == 409

    renamed = client.put("/api/groups/open A", json={"name": "open B"})
    assert renamed.status_code == 200 and renamed.json()["count"] == record["count"]
    replaced = client.put("/api/groups/open B", json={"polygon": SQUARE, "axes": [1, 2]})
    assert replaced.json()["count"] == N and replaced.json()["axes"] == [1, 2]
    names = [g["name"] for g in client.get("/api/groups").json()["groups"]]
    assert names == ["bin 1", "open B"]
    assert client.put("/api/groups/open B", json={"name": "bin 1"}).status_code == 409

    mask = np.frombuffer(client.get("/api/groups/bin 1/mask").content, np.uint8)
    np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(0, N, 7))

    assert client.delete("/api/groups/open B").json() == {"deleted": "open B"}
    assert client.get("/api/groups/open B").status_code == 404
    assert read_groups(project / "analyze" / "groups.json").names() == ["bin 1"]


def test_no_group_file_yet(project):
    (project / "analyze" / "groups.json").unlink()
    with make_client(project) as client:
        assert client.get("/api/groups").json() == {"groups": []}
        assert client.post("/api/groups", json={"name": "a", "polygon": SQUARE}).status_code == 201
    record = json.loads((project / "analyze" / "groups.json").read_text())
    assert record["n_particles"] == N and record["particles"] == "../predict/particles.star"


def test_models_centroid_and_path(client):
    pdb = client.get("/api/groups/bin 1/model.pdb").text
    assert pdb.count("ATOM") == 1656
    body = {"points": [[-100, 0], [0, 50], [100, 0]], "axes": [0, 1], "frames": 5}
    result = client.post("/api/path", json=body).json()
    assert result["frames"] == 5 and len(result["amplitudes"]) == 5
    assert result["pdb"].count("MODEL") == 5 and result["pdb"].count("ATOM") == 5 * 1656
    np.testing.assert_allclose(result["coords"][0], [-100, 0])


# ---- export


def test_export_writes_relion_star_inside_the_project(client, project):
    client.post("/api/groups", json={"name": "tri", "polygon": TRIANGLE})
    result = client.post("/api/groups/tri/export").json()
    assert result["path"] == "export/tri.star"
    exported = read_particles(project / result["path"], fill_image_size=False)
    original = read_particles(project / "predict" / "particles.star", fill_image_size=False)
    indices = np.flatnonzero(
        points_in_polygon(
            load_space(project / "analyze" / "space.npz").coords[:, :2], np.array(TRIANGLE)
        )
    )
    assert len(exported) == result["n_particles"] == len(indices)
    np.testing.assert_array_equal(
        exported.particles["rlnAngleRot"], original.particles["rlnAngleRot"].to_numpy()[indices]
    )
    # Image paths are rewritten relative to the new folder, still pointing at the same stacks.
    assert exported.particles["rlnImageName"].iloc[0].endswith("../predict/stacks/chunk0000.mrcs")


# ---- jobs


def test_job_lifecycle_and_double_start(client, project):
    client.post("/api/groups", json={"name": "tri", "polygon": TRIANGLE})
    assert client.get("/api/groups/tri/reconstruct").json()["state"] == "none"
    # Ten simultaneous clicks start one job.
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(client.post("/api/groups/tri/reconstruct")))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a.status_code == 200 for a in answers)
    assert sum(a.json()["started"] for a in answers) == 1
    assert all(a.json()["state"] == "running" for a in answers)
    again = client.post("/api/groups/tri/reconstruct").json()
    assert not again["started"] and again["state"] == "running"
    # The group is frozen at start: editing it now does not change the running job.
    client.put("/api/groups/tri", json={"polygon": SQUARE})
    job = wait_for(client, "tri")
    assert job["state"] == "done", job
    count = int(
        points_in_polygon(
            load_space(project / "analyze" / "space.npz").coords[:, :2], np.array(TRIANGLE)
        ).sum()
    )
    result = job["result"]
    assert result["summary"]["n_particles"] == count
    assert result["files"]["slices.png"] == "reconstruct/tri/slices.png"
    assert len(result["fsc"]["fsc"]) == 32
    png = client.get("/api/file", params={"path": result["files"]["slices.png"]})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    listed = {g["name"]: g for g in client.get("/api/groups").json()["groups"]}
    assert listed["tri"]["job"]["state"] == "done"
    # Done: a new click starts a new job.
    assert client.post("/api/groups/tri/reconstruct").json()["started"]
    wait_for(client, "tri")


def test_failed_job_reports_the_log_tail(project):
    with make_client(project, command=standin_command(fail=True)) as client:
        client.post("/api/groups", json={"name": "bad", "polygon": TRIANGLE})
        client.post("/api/groups/bad/reconstruct")
        job = wait_for(client, "bad")
    assert job["state"] == "failed" and job["returncode"] == 1
    assert any("told to fail" in line for line in job["log_tail"])


def test_results_of_an_earlier_run_are_shown(client, project):
    folder = project / "reconstruct" / "bin_1"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text('{"n_particles": 5, "resolution_fsc0143_A": 7.5}')
    job = client.get("/api/groups/bin 1/reconstruct").json()
    assert job["state"] == "done" and job["result"]["summary"]["resolution_fsc0143_A"] == 7.5


def test_missing_command_is_a_clean_error(project):
    with make_client(project, command=lambda request: ["/nonexistent/reconstruct"]) as client:
        response = client.post("/api/groups/bin 1/reconstruct")
    assert response.status_code == 500 and "cannot start" in response.json()["error"]


# ---- safety


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "reconstruct/../../outside.txt",
        "/etc/passwd",
        "%2e%2e/outside.txt",
        "..%2Foutside.txt",
        "link/outside.txt",
        "analyze/../../project/../outside.txt",
    ],
)
def test_files_outside_the_project_are_refused(client, project, path):
    (project.parent / "outside.txt").write_text("secret")
    link = project / "link"
    if not link.exists():
        link.symlink_to(project.parent, target_is_directory=True)
    response = client.get("/api/file", params={"path": path})
    assert response.status_code in (403, 404), response.text
    assert "secret" not in response.text and "error" in response.json()


def test_files_in_the_project_are_served(client):
    response = client.get("/api/file", params={"path": "analyze/groups.json"})
    assert response.status_code == 200 and response.json()["format"] == "deephemnma-groups"
    assert client.get("/api/file", params={"path": "nothing.txt"}).status_code == 404


def test_traversal_through_group_names_writes_nothing_outside(client, project):
    for name in ["../evil", "..", "a/b", "/etc/x", "x" * 65, ".hidden", ""]:
        response = client.post("/api/groups", json={"name": name, "polygon": TRIANGLE})
        assert response.status_code in (400, 422), (name, response.text)
    for url in ["/api/groups/..%2F..%2Fevil/export", "/api/groups/%2E%2E/reconstruct"]:
        assert client.post(url).status_code in (400, 404)
    assert sorted(p.name for p in project.parent.iterdir()) == ["project"]


def test_static_files_cannot_escape(client):
    for url in ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"]:
        response = client.get(url)
        assert response.status_code == 404 or "create_app" not in response.text


def test_token_is_required_when_set(project):
    with make_client(project, token="s3cret-token") as client:
        assert client.get("/api/info").status_code == 401
        assert "error" in client.get("/").json()
        assert client.get("/api/info", params={"token": "wrong"}).status_code == 401
        assert client.get("/api/info", params={"token": "s3cret-token"}).status_code == 200
        assert client.get("/api/info", headers={"X-Explore-Token": "s3cret-token"}).is_success
        page = client.get("/", params={"token": "s3cret-token"}).text
        # The page carries the token on to its scripts and API calls.
        assert 'content="s3cret-token"' in page and "explore.js?token=s3cret-token" in page
        assert client.get("/static/explore.js", params={"token": "s3cret-token"}).is_success
        assert client.get("/static/explore.js").status_code == 401


def test_host_check_and_write_header(project):
    app = create_app(project_paths(project), allowed_hosts=frozenset({"127.0.0.1"}))
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"Host": "evil.example:8765"}).status_code == 403
        # A foreign page cannot add the write header without a CORS preflight.
        response = client.post("/api/groups", json={"name": "x", "polygon": SQUARE})
        assert response.status_code == 403
        assert client.post("/api/groups", json={"name": "x", "polygon": SQUARE}, headers=WRITE)


@pytest.mark.parametrize(
    "method, url, body",
    [
        ("post", "/api/groups", {"name": "a"}),
        ("post", "/api/groups", {"name": "a", "polygon": [[0, 0], [1, 1]]}),
        ("post", "/api/groups", {"name": "a", "polygon": [[0, 0], [1, "x"], [2, 2]]}),
        ("post", "/api/groups", {"name": "a", "polygon": TRIANGLE, "axes": [0, 0]}),
        ("post", "/api/groups", {"name": "a", "polygon": TRIANGLE, "axes": [0, 7]}),
        ("post", "/api/groups", {"name": "a", "polygon": TRIANGLE, "surprise": 1}),
        ("post", "/api/groups", {"name": 5, "polygon": TRIANGLE}),
        ("post", "/api/groups", [1, 2, 3]),
        ("post", "/api/groups", "not json"),
        ("put", "/api/groups/bin 1", {"axes": [0, 1]}),
        ("put", "/api/groups/bin 1", {"polygon": "nope"}),
        ("put", "/api/groups/nope", {"name": "b"}),
        ("delete", "/api/groups/nope", None),
        ("post", "/api/path", {"points": [[0, 0]]}),
        ("post", "/api/path", {"points": [[0, 0], [1, 1]], "frames": 10**6}),
        ("post", "/api/path", {"points": [[0, 0], [1, 1]], "axes": [5, 6]}),
        ("get", "/api/pc/99", None),
        ("get", "/api/pc/abc", None),
        ("get", "/api/color?name=nope", None),
        ("get", "/api/color?name=density&axes=0,x", None),
        ("get", "/api/color?name=density&axes=0,1,2", None),
        ("get", "/api/color?name=truth:99", None),
        ("get", "/api/groups/bad%00name", None),
        ("get", "/api/file", None),
        ("get", "/api/nothing", None),
    ],
)
def test_malformed_requests_get_4xx_json(client, method, url, body):
    if isinstance(body, str):
        response = client.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
    elif body is None:
        response = client.request(method, url)
    else:
        response = client.request(method, url, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    message = response.json()["error"]
    assert isinstance(message, str) and message and "Traceback" not in message


def test_nan_and_huge_bodies_are_refused(client):
    body = '{"name": "a", "polygon": [[NaN, 0], [1, 1], [2, 0]]}'
    response = client.post(
        "/api/groups", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    big = b'{"name": "a", "polygon": [' + b"[1, 1]," * 3_000_000 + b"[1, 1]]}"
    response = client.post("/api/groups", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_project_without_modes_or_particles(tmp_path):
    root = write_project(tmp_path / "bare", n=500, particles=False, modes=False)
    with make_client(root) as client:
        info = client.get("/api/info").json()
        assert not info["has_modes"] and not info["has_particles"]
        for url in ["/api/groups/bin 1/export", "/api/groups/bin 1/reconstruct"]:
            response = client.post(url)
            assert response.status_code == 400 and "particle STAR" in response.json()["error"]
        response = client.get("/api/groups/bin 1/model.pdb")
        assert response.status_code == 404 and "modes" in response.json()["error"]


def test_cli_refuses_a_missing_project(tmp_path, capsys):
    from deephemnma.cli.main import main

    assert main(["explore", str(tmp_path / "nothing")]) == 2
    assert "project directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["explore", str(tmp_path / "empty")]) == 2
    assert "space.npz" in capsys.readouterr().err


def test_page_is_self_contained(client):
    """Everything the page loads is served by the app itself (works with no internet)."""
    import re

    from deephemnma.explore.app import STATIC

    page = client.get("/").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/vendor/3Dmol-min.js" in assets and "/static/scatter.js" in assets
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/static/"), asset
        assert client.get(asset).status_code == 200, asset
    for own in ("index.html", "explore.js", "scatter.js", "explore.css"):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", (STATIC / own).read_text())
    assert (STATIC / "vendor" / "3Dmol-LICENSE.txt").is_file()


def test_reads_the_space_file_analyze_writes(project):
    """The explorer reads ``analyze``'s own space.npz writer (the shared contract)."""
    analysis_space = pytest.importorskip("deephemnma.analysis.space")
    ours = load_space(project / "analyze" / "space.npz")
    space = analysis_space.ConformationalSpace(
        coords=ours.coords,
        amplitudes=ours.amplitudes,
        mode_numbers=ours.mode_numbers,
        components=ours.components,
        mean=ours.mean,
        explained_variance_ratio=ours.explained_variance_ratio,
        source=ours.source,
        source_names=ours.source_names,
        score=ours.score,
        truth=ours.truth,
        particles="../predict/particles.star",
    )
    analysis_space.save_space(project / "analyze" / "space.npz", space)
    again = load_space(project / "analyze" / "space.npz")
    np.testing.assert_array_equal(again.coords, ours.coords)
    assert again.particles == (project / "predict" / "particles.star").resolve()
    with make_client(project) as client:
        assert client.get("/api/info").json()["has_particles"]
        assert client.post("/api/groups/bin 1/export").json()["n_particles"] == len(range(0, N, 7))


def test_a_group_the_space_cannot_resolve_does_not_break_the_list(project):
    from deephemnma.groups import GroupSet, write_groups

    path = project / "analyze" / "groups.json"
    groups = read_groups(path)
    odd = Group("on pc 6", polygon=np.array(TRIANGLE, dtype=float), axes=(0, 5))
    write_groups(path, GroupSet(groups.groups + (odd,), groups.n_particles, groups.particles))
    with make_client(project) as client:
        listed = client.get("/api/groups").json()["groups"]
        assert listed[0]["count"] == len(range(0, N, 7))
        assert listed[1]["count"] is None and "axes" in listed[1]["error"]
        response = client.get("/api/groups/on pc 6/mask")
        assert response.status_code == 400 and "error" in response.json()
