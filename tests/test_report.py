"""`deephemnma report`: the HTML page renders, every embedded image decodes, nothing external,
missing and malformed stage files become notes."""

import base64
import csv
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from deephemnma.cli.main import main
from deephemnma.io.star import amplitudes, read_particles, with_amplitudes, write_particles
from deephemnma.plotting import plt, save_figure
from deephemnma.report.files import count_star_rows
from deephemnma.report.format import duration, span


class _Page(HTMLParser):
    """Images, links, headings, scripts and the text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])
        if tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _decode(src: str) -> str:
    """Check a data URI decodes to a valid PNG/GIF; return the format."""
    assert src.startswith("data:image/"), src[:40]
    header, payload = src.split(",", 1)
    mime = header[len("data:") : header.index(";")]
    assert header.endswith(";base64")
    data = base64.b64decode(payload, validate=True)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        fmt = image.format
    assert {"image/png": "PNG", "image/gif": "GIF"}[mime] == fmt
    return fmt


def _png(path, title="figure"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    return save_figure(fig, path, dpi=40)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A small project: simulate → predict (truth + noise) → filter, analyze, evaluate with the
    real commands; stage1, train and reconstruct from hand-written files."""
    root = tmp_path_factory.mktemp("report")
    sim = root / "sim"
    assert (
        main(
            ["simulate", "-n", "24", "--image-size", "32", "--pixel-size", "2.6"]
            + ["--quiet", "-o", str(sim)]
        )
        == 0
    )
    proj = root / "project"
    (proj / "nma").mkdir(parents=True)
    (proj / "nma" / "modes.npz").write_bytes((sim / "modes.npz").read_bytes())
    step = {"step": "nma", "status": "finished", "started": 1.7e9, "finished": 1.7e9 + 1.5}
    _write(proj / "nma" / "step.json", json.dumps({**step, "seconds": 1.5, "extra": {}}))

    _write(proj / "nma" / "config.json", json.dumps({"nma": {"modes": "7-8"}}))
    write_particles(proj / "preprocess" / "particles.star", read_particles(sim / "particles.star"))
    _write(proj / "preprocess" / "config.json", json.dumps({"preprocess": {"size": 32}}))

    table = read_particles(sim / "particles.star")
    modes, values = amplitudes(table)
    noisy = values + np.random.default_rng(0).normal(0, 10, values.shape)
    (proj / "predict").mkdir()
    pred = write_particles(
        proj / "predict" / "particles.star", with_amplitudes(table, modes, noisy)
    )

    assert (
        main(["filter", str(pred), "--mahalanobis", "2", "-o", str(proj / "filter/kept.star")]) == 0
    )
    truth, mode_file = str(sim / "particles.star"), str(sim / "modes.npz")
    assert main(["evaluate", str(pred), "--truth", truth, "--modes", mode_file,
                 "-o", str(proj / "evaluate")]) == 0  # fmt: skip
    assert main(["analyze", str(pred), "-o", str(proj / "analyze"), "--modes", mode_file,
                 "--truth", truth, "--groups", "2", "--method", "kmeans", "--frames", "3",
                 "--gif-size", "24", "--trajectory-pcs", "1", "--quiet"]) == 0  # fmt: skip

    stage1 = proj / "stage1"
    _write(
        stage1 / "summary.json",
        json.dumps(
            {
                "particles": 24,
                "score_mean": 0.51,
                "score_median": 0.5,
                "amplitude_mean": {"7": -90.0, "8": 10.0, "9": 5.0},
                "amplitude_std": {"7": 50.0, "8": 60.0, "9": 70.0},
            }
        ),
    )
    _write(stage1 / "config.json", json.dumps({"mode_numbers": [7, 8, 9]}))
    _write(stage1 / "step.json", json.dumps({"step": "stage1", "seconds": 75.0, "finished": "x"}))
    _png(stage1 / "summary.png")

    train = proj / "train"
    rows = [
        {"epoch": e, "train_total": 3.0 / e, "val_total": 3.2 / e, "val_amp_mae": 70 / e,
         "val_angle_deg": 80 / e, "val_shift_mae_A": 0.8 / e, "train_img_per_s": 70}
        for e in (1, 2, 3)
    ]  # fmt: skip
    train.mkdir()
    with (train / "history.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = {
        "device": "cpu",
        "heads": ["amplitudes", "rotation", "shifts"],
        "mode_numbers": [7, 8, 9],
        "image_size": 32,
        "pixel_size_A": 2.6,
        "splits": {"train": 16, "val": 4, "test": 4},
        "result": {"epochs_done": 3, "best": {"epoch": 3, "val_loss": 1.07}},
        "timings": {"this_run_s": 12.5},
    }
    _write(train / "config.json", json.dumps(config))

    rec = proj / "reconstruct"
    freq = np.linspace(0, 0.19, 20)
    fsc = np.clip(1.2 - 6 * freq, -0.05, 1)
    text = "shell,frequency_invA,resolution_A,n_voxels,fsc_half_maps,fsc_model\n" + "".join(
        f"{i},{f:.4f},{(1 / f if f else float('inf')):.3f},10,{c:.4f},{c - 0.1:.4f}\n"
        for i, (f, c) in enumerate(zip(freq, fsc, strict=True))
    )
    _write(rec / "kmeans1" / "fsc.csv", text)
    _png(rec / "kmeans1" / "slices.png", "slices")
    group = {  # as deephemnma.reconstruct.group.group_summary writes it
        "folder": "kmeans1",
        "name": "kmeans1",
        "n_particles": 12,
        "box": 32,
        "voxel_size_A": 2.6,
        "resolution_fsc0143_A": 6.1,
        "resolution_fsc05_A": 8.2,
        "fsc0143_at_nyquist": False,
        "fsc05_at_nyquist": False,
        "resolution_model_fsc0143_A": 5.2,
        "resolution_model_fsc05_A": 9.0,
        "model_fsc0143_at_nyquist": True,
        "model_fsc05_at_nyquist": False,
        "mean_amplitudes": {"07": -100.0, "08": 50.5, "09": 20.0},
        "timing_s": {"read": 0.1, "insert": 0.5},
    }
    _write(rec / "kmeans1" / "summary.json", json.dumps(group))
    _write(rec / "kmeans2" / "summary.json", json.dumps({"name": "kmeans2", "n_particles": 12}))
    _png(rec / "kmeans2" / "fsc.png", "fsc")
    _write(rec / ".explore" / "job.json", "{}")
    run = {"groups": [group], "skipped": [{"name": "tiny", "reason": "3 particles"}]}
    _write(rec / "summary.json", json.dumps({**run, "ctf_mode": "phase-flipped", "total_s": 3.5}))
    _write(root / "project" / "extra" / "step.json", json.dumps({"step": "x", "seconds": 2}))
    return proj


def test_report_renders_with_embedded_images(project, tmp_path):
    out = tmp_path / "report.html"
    code = main(["report", str(project), "-o", str(out), "--mode-movies", "1",
                 "--movie-size", "24"])  # fmt: skip
    assert code == 0
    page = _parse(out)
    formats = [_decode(src) for src in page.images]
    # Drawn by the report: modes, training curves, FSC from csv, one mode movie; and the
    # stages' own PNGs and trajectory GIFs.
    assert formats.count("GIF") >= 2 and formats.count("PNG") >= 10
    for heading in (
        "Overview",
        "Normal modes",
        "Stage 1: HEMNMA alignment",
        "Outlier filter",
        "Stage 2: network training",
        "Stage 2: prediction",
        "Stage 3: conformational space",
        "Reconstructions",
        "Accuracy against ground truth",
        "Group kmeans1",
        "Other steps",
    ):
        assert any(heading in h for h in page.headings), heading
    # Self-contained: no script, no style sheet link, nothing fetched from elsewhere.
    assert "script" not in page.tags and "link" not in page.tags
    assert all(link.startswith("#") for link in page.links), page.links
    text = " ".join(page.text)
    assert "http://" not in out.read_text() and "https://" not in out.read_text()
    # Paper tables: our row next to the published ones.
    assert "predicted vs truth" in text and "paper T3/T4 large test: inferred vs truth" in text
    assert "RMSD, amplitudes (Å)" in text
    assert "6.10" in text and "9.00" in text and "5.20*" in text  # resolutions; * Nyquist
    assert "groups skipped: tiny (3 particles)" in text
    assert "07: -100.0, 08: 50.5" not in text and "7: -100.0, 8: 50.5, 9: 20.0" in text
    assert "1 min 15 s" in text  # stage-1 timing from step.json
    assert ".explore" not in " ".join(page.headings)
    assert "modes 7–8 analysed" in text and "24 particles at 32² px" in text


def test_report_default_path_and_library(project):
    from deephemnma.report import ReportOptions, collect_report, write_report

    report = collect_report(project, ReportOptions(mode_movies=0))
    assert [s.folder for s in report.ran][:4] == ["nma", "preprocess", "stage1", "filter"]
    notes = {s.key: s.notes for s in report.ran if s.notes}
    assert notes == {"reconstruct": ["groups skipped: tiny (3 particles)"]}, notes
    path = write_report(project, options=ReportOptions(mode_movies=0))
    assert path == project / "report.html" and path.stat().st_size > 10_000
    path.unlink()


def test_empty_project_and_missing_folder(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path), "-o", str(out)]) == 0
    text = " ".join(_parse(out).text)
    assert "Nothing has run in this project yet" in text
    assert text.count("not run") >= 8
    assert "nothing has run" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "project folder not found" in capsys.readouterr().err


def test_malformed_files_become_notes(tmp_path):
    proj = tmp_path / "proj"
    _write(proj / "nma" / "modes.npz", "not a zip")
    _write(proj / "stage1" / "summary.json", "{broken")
    _write(proj / "stage1" / "summary.png", "not a png")
    _write(proj / "train" / "history.csv", "")
    _write(proj / "train" / "config.json", "[1, 2]")
    _write(proj / "analyze" / "summary.json", json.dumps([1, 2]))
    _write(proj / "analyze" / "density.png", "GIF89a but not really")
    _write(proj / "reconstruct" / "g1" / "summary.json", json.dumps({"n_particles": "many"}))
    _write(proj / "reconstruct" / "g1" / "fsc.csv", "a,b\n1,2\n")
    _write(proj / "reconstruct" / "g1" / "map.mrc", "not a map")
    _write(proj / "evaluate" / "evaluation.json", json.dumps({"results": [{"n": "x"}]}))
    _write(proj / "predict" / "particles.star", "data_particles\nloop_\n_rlnImageName #1\n")
    _write(proj / "predict" / "step.json", json.dumps({"status": "running", "seconds": None}))
    out = tmp_path / "r.html"
    assert main(["report", str(proj), "-o", str(out), "--mode-movies", "0"]) == 0
    page = _parse(out)
    for src in page.images:
        _decode(src)
    text = " ".join(page.text)
    for fragment in (
        "nma/modes.npz could not be read",
        "stage1/summary.json could not be read",
        "stage1/summary.png is not a readable PNG or GIF image",
        "train/history.csv has no rows",
        "train/config.json: expected a JSON object",
        "analyze/summary.json: expected a JSON object",
        "analyze/density.png is not a readable PNG or GIF image",
        "header could not be read",
        "predict/step.json: status 'running'",
    ):
        assert fragment in text, fragment


def test_star_row_count_and_formats(project):
    star = project / "predict" / "particles.star"
    assert count_star_rows(star, [], project) == len(read_particles(star)) == 24
    assert span([7, 8, 9, 11]) == "7–9, 11"
    assert duration(75) == "1 min 15 s" and duration(3 * 3600 + 420) == "3 h 07 min"
