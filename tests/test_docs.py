"""The README's parameter table lists every pipeline parameter."""

import inspect
import re
from pathlib import Path

from pipelines.training import make_pipeline

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_pipeline_parameter_is_documented_in_the_readme():
    parameters = set(inspect.signature(make_pipeline("vertex").pipeline_func).parameters)
    section = README.read_text().split("## Parameters")[1].split("\n## ")[0]
    documented = set(re.findall(r"`([a-z_]+)`", section))
    assert parameters - documented == set()
