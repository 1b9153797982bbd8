"""deephemnma run: configuration (TOML + flags), resume, invalidation, --from/--until,
status; fake steps keep these tests fast (the real steps are tested end to end elsewhere)."""

import json
from dataclasses import replace

import pytest

from deephemnma.cli.main import main
from deephemnma.errors import InputError
from deephemnma.pipeline import run as pipeline_run
from deephemnma.pipeline.config import ProjectConfig, apply, load_config, parse_overrides, to_toml
from deephemnma.pipeline.steps import Step


def test_config_from_toml_and_flags(tmp_path):
    path = tmp_path / "project.toml"
    path.write_text('[project]\nparticles = "data/p.star"\n[stage1]\nn_images = 500\n')
    config = load_config(path, ["--stage1.n_images", "700", "--predict.refine=false"])
    assert config.stage1.n_images == 700
    assert config.predict.refine is False
    assert config.path("particles") == (tmp_path / "data" / "p.star").resolve()
    # The written TOML reads back to the same configuration.
    again = tmp_path / "again.toml"
    again.write_text(to_toml(config))
    assert replace(load_config(again), folder=config.folder) == config


@pytest.mark.parametrize(
    "text, message",
    [
        ("[stage1]\nn_imgs = 5\n", "unknown key"),
        ("[stages]\nx = 1\n", "unknown section"),
        ("[stage1]\nn_images = 'many'\n", "wrong type"),
        ("[stage1\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(path)


def test_flag_errors():
    with pytest.raises(InputError, match="unexpected argument"):
        parse_overrides(["stage1.n_images", "5"])
    with pytest.raises(InputError, match="wrong type"):
        apply(ProjectConfig(), parse_overrides(["--train.epochs", "ten"]))


@pytest.fixture
def fake_steps(monkeypatch):
    """Three steps a → b → c that write a file and count their calls; b can be made to fail
    once (as a kill would interrupt it)."""
    calls = []
    fail = {"b": False}

    def make(name):
        def run(ctx):
            calls.append(name)
            (ctx.folder(name) / "partial").write_text("x")
            if fail.get(name):
                fail[name] = False
                raise RuntimeError("killed")
            (ctx.folder(name) / "out.txt").write_text(json.dumps(ctx.config.section_dict(name)))
            return {"ok": True}

        return run

    steps = (
        Step("nma", ("nma",), (), make("nma")),
        Step("stage1", ("stage1",), ("nma",), make("stage1")),
        Step("train", ("train",), ("stage1",), make("train")),
    )
    monkeypatch.setattr(pipeline_run, "STEPS", steps)
    monkeypatch.setattr(pipeline_run, "STEP_NAMES", tuple(s.name for s in steps))
    return calls, fail


def _states(root, config=None):
    return {s.step: s.state for s in pipeline_run.project_status(root, config)}


def test_rerun_skips_finished_steps(tmp_path, fake_steps):
    calls, _ = fake_steps
    config = ProjectConfig()
    pipeline_run.run_project(config, tmp_path, log=lambda *_: None)
    assert calls == ["nma", "stage1", "train"]
    pipeline_run.run_project(config, tmp_path, log=lambda *_: None)
    assert calls == ["nma", "stage1", "train"]
    assert set(_states(tmp_path).values()) == {"finished"}
    assert (tmp_path / "run_config.toml").exists()


def test_a_changed_setting_invalidates_that_step_and_the_later_ones(tmp_path, fake_steps):
    calls, _ = fake_steps
    config = ProjectConfig()
    pipeline_run.run_project(config, tmp_path, log=lambda *_: None)
    changed = apply(config, {"stage1": {"n_images": 5}})
    assert _states(tmp_path, changed) == {"nma": "finished", "stage1": "stale", "train": "stale"}
    calls.clear()
    pipeline_run.run_project(changed, tmp_path, log=lambda *_: None)
    assert calls == ["stage1", "train"]
    assert json.loads((tmp_path / "stage1" / "out.txt").read_text())["n_images"] == 5


def test_an_interrupted_step_resumes_in_its_folder(tmp_path, fake_steps):
    calls, fail = fake_steps
    fail["stage1"] = True
    config = ProjectConfig()
    with pytest.raises(RuntimeError):
        pipeline_run.run_project(config, tmp_path, log=lambda *_: None)
    assert _states(tmp_path, config)["stage1"] == "interrupted"
    calls.clear()
    pipeline_run.run_project(config, tmp_path, log=lambda *_: None)
    assert calls == ["stage1", "train"]  # nma is not redone
    assert (tmp_path / "stage1" / "partial").exists()  # the folder was kept for resuming


def test_from_and_until(tmp_path, fake_steps):
    calls, _ = fake_steps
    config = ProjectConfig()
    pipeline_run.run_project(config, tmp_path, until_step="stage1", log=lambda *_: None)
    assert calls == ["nma", "stage1"]
    assert _states(tmp_path, config)["train"] == "pending"
    calls.clear()
    pipeline_run.run_project(config, tmp_path, from_step="stage1", log=lambda *_: None)
    assert calls == ["stage1", "train"]
    with pytest.raises(InputError, match="unknown step"):
        pipeline_run.run_project(config, tmp_path, from_step="nope", log=lambda *_: None)


def test_cli_status_and_bad_input(tmp_path, fake_steps, capsys):
    config = tmp_path / "p.toml"
    config.write_text("[stage1]\nn_images = 9\n")
    assert main(["run", str(config), "--train.epochs", "3"]) == 0
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "stage1" in out
    assert main(["status", str(tmp_path), "--stage1.n_images", "10"]) == 0
    assert "stale" in capsys.readouterr().out
    assert main(["run", str(config), "--stage1.nope", "1"]) == 2
    assert "stage1.nope" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "missing")]) == 2


def test_cost_table_extrapolates_measured_seconds(tmp_path):
    from deephemnma.pipeline.benchmark import MILLION, cost_table, format_cost

    def step(name, seconds, **extra):
        (tmp_path / name).mkdir()
        record = {"step": name, "seconds": seconds, "extra": extra}
        (tmp_path / name / "step.json").write_text(json.dumps(record))

    step("stage1", 100.0, particles=200, workers=2, cpu_s=150.0)
    step("train", 60.0, cpu_s=50.0)
    step("predict", 40.0, particles=200, cpu_s=20.0)
    (tmp_path / "train" / "history.csv").write_text("epoch,lr\n1,0.1\n2,0.1\n")
    (tmp_path / "train" / "splits.json").write_text('{"counts": {"train": 100}}')
    (tmp_path / "train" / "config.json").write_text('{"device": "cpu"}')
    cost = cost_table(tmp_path, 400)
    measured = cost["measured"]
    assert measured["stage1_cpu_s_per_image"] == pytest.approx(0.75)  # CPU time, not wall
    assert measured["train_s_per_image_epoch"] == pytest.approx(50.0 / (2 * 100))
    assert measured["predict_cpu_s_per_image"] == pytest.approx(0.1)
    ours = cost["million"]["deephemnma (this run)"]
    expected = (20_000 * 0.75 + 14_055 * 2 * 0.25 + (MILLION - 20_000) * 0.1) / 3600
    assert ours["cpu_h"] == pytest.approx(expected) and ours["gpu_h"] == 0
    assert cost["million"]["HEMNMA (paper)"]["cpu_h"] == 64_000
    assert "| HEMNMA (paper) | 64,000.0 | 0.0 |" in format_cost(cost)
