"""``deephemnma run``: the whole workflow as resumable steps in one project folder."""

from deephemnma.pipeline.config import ProjectConfig, load_config
from deephemnma.pipeline.run import project_status, run_project
from deephemnma.pipeline.steps import STEP_NAMES

__all__ = ["STEP_NAMES", "ProjectConfig", "load_config", "project_status", "run_project"]
