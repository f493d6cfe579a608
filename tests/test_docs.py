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


def test_the_readme_recipe_table_matches_the_config_fields_and_presets():
    from fer_pipeline.recipe_table import differences

    assert differences(README.read_text()) == [], "README's recipe table is out of date: run `make docs`"


def test_a_missing_or_stale_row_is_named_by_its_field():
    from fer_pipeline.recipe_table import differences, markdown, rows

    table = markdown()
    assert differences(table.replace(rows()["zoom"] + "\n", "")) == ["row for 'zoom' missing or out of date"]
    stale = table.replace(rows()["tta"], rows()["tta"].replace("| false |", "| true |"))
    assert differences(stale) == ["row for 'tta' missing or out of date"]
    extra = table.replace(rows()["tta"], rows()["tta"] + "\n| `turbo` | 1 | | gone |")
    assert differences(extra) == ["row `turbo` names no recipe field"]


def test_the_table_command_names_a_missing_file_in_one_line(tmp_path, capsys):
    from fer_pipeline.recipe_table import main

    assert main([str(tmp_path / "nope.md")]) == 2
    assert "nope.md does not exist" in capsys.readouterr().err and not (tmp_path / "nope.md").exists()


def test_the_watching_guides_run_comparison_counts_the_parameters_a_run_records():
    """`fer-pipeline run` records the resolved recipe, the source and the dataset's checksum."""
    from fer_pipeline.recipe import resolve

    shown = re.search(r"parameters that differ \(1 of (\d+);", (README.parent / "docs" / "watching.md").read_text())
    assert shown and int(shown.group(1)) == len(resolve().params()) + len(("source", "dataset_sha256"))
