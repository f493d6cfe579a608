"""The settings file as Python and make read it (pipelines/settings_file.py, python-dotenv;
pipelines/settings_cli.py make-vars, mk/cloud.mk): one loader, one-line errors naming the
file and the key, nothing written by a refused command."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fer_pipeline.errors import ConfigError
from pipelines import settings_cli
from pipelines.settings import make_values
from pipelines.settings_file import read_config, read_env_file, update_env_file

ROOT = Path(__file__).resolve().parents[1]


def test_env_file_syntax(tmp_path):
    config = tmp_path / "submit.env"
    config.write_text(
        "# comment\nexport PROJECT=p\nREGION = europe-west4  # trailing\n\n"
        "LABELS='a=b, c=d'\nDISPLAY_NAME=\"x # y\"\nJOB_ID=\nPARAM_data_source=gs://b/x.zip\n"
    )
    assert read_env_file(config) == {
        "PROJECT": "p",
        "REGION": "europe-west4",
        "LABELS": "a=b, c=d",
        "DISPLAY_NAME": "x # y",
        "JOB_ID": "",
        "PARAM_data_source": "gs://b/x.zip",
    }


@pytest.mark.parametrize("text, line", [("PROJECT=p\n\n\noops\n", 4), ("A.B=1\n", 1), ("X='open\n", 1)])
def test_a_bad_line_is_named_by_file_and_number(tmp_path, text, line):
    config = tmp_path / "submit.env"
    config.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config))}:{line}: expected KEY=VALUE, got [\'\"]"):
        read_env_file(config)


@pytest.mark.parametrize(
    "name, text", [("s.yaml", "project: [\n"), ("s.json", '{"project": \n'), ("s.env", b"PROJECT=\xff\n")]
)
def test_unreadable_files_are_one_line_errors(tmp_path, name, text):
    config = tmp_path / name
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        read_config(config)
    assert str(info.value).startswith(str(config)) and "\n" not in str(info.value)


def test_make_values(tmp_path):
    assert make_values(tmp_path / "absent.env") == {}
    config = tmp_path / "s.yaml"
    config.write_text(
        "project: p\nregion: europe-west4\nregistry: europe-west4-docker.pkg.dev/p/fer\n"
        "parameters:\n  data_source: gs://b/x.zip\n"
    )
    assert make_values(config) == {
        "PROJECT": "p",
        "REGION": "europe-west4",
        "REGISTRY": "europe-west4-docker.pkg.dev/p/fer",
    }
    config = tmp_path / "s.env"
    config.write_text("REGSTRY=x\n")
    with pytest.raises(ConfigError, match="unknown setting.*REGSTRY"):
        make_values(config)
    config.write_text("REGISTRY='a b'\n")
    with pytest.raises(ConfigError, match="REGISTRY='a b'"):
        make_values(config)


def test_make_vars_prints_one_line_and_exit_code(tmp_path, capsys):
    config = tmp_path / "s.env"
    config.write_text("PROJECT=p\nREGISTRY=r/x\n")
    assert settings_cli.main(["make-vars", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "PROJECT=p REGISTRY=r/x\n"
    config.write_text("oops\n")
    assert settings_cli.main(["make-vars", "--config", str(config)]) == 2
    assert capsys.readouterr().out == f"{config}:1: expected KEY=VALUE, got 'oops'\n"


def test_terraform_values_keep_comments_and_quote_what_needs_it(tmp_path):
    config = tmp_path / "sub" / "submit.env"
    update_env_file(config, {"PROJECT": "p1"})
    config.write_text("# keep\nexport PROJECT=old  # old\nLABELS=a=b\n")
    update_env_file(config, {"PROJECT": "p2", "DISPLAY_NAME": "two words # not a comment"})
    assert config.read_text() == "# keep\nPROJECT=p2\nLABELS=a=b\nDISPLAY_NAME='two words # not a comment'\n"
    assert read_env_file(config)["DISPLAY_NAME"] == "two words # not a comment"


def test_from_terraform_failure_writes_nothing(tmp_path, capsys):
    config = tmp_path / "submit.env"
    assert settings_cli.main(["from-terraform", "--tf", str(tmp_path / "no-terraform"), "--config", str(config)]) == 2
    assert "cannot run" in capsys.readouterr().err and not config.exists()


def test_the_old_entry_point_still_runs(tmp_path):
    config = tmp_path / "s.env"
    config.write_text("REGION=europe-west4\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.settings", "make-vars", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "REGION=europe-west4\n", result.stderr


def _make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY", "TAG", "CONFIG", "PROJECT", "REGION", "REPO")}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, check=False, env=env
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_reads_the_file_through_the_python_loader(tmp_path):
    config = tmp_path / "s.yaml"  # a format only the Python loader reads
    config.write_text("project: p\nregion: europe-west4\n")
    out = _make("-n", "cloudbuild", "TAG=t", f"CONFIG={config}").stdout
    assert (
        "--project 'p' --region 'europe-west4'" in out and "_REGISTRY=europe-west4-docker.pkg.dev/p/fer-pipeline" in out
    )
    out = _make("-n", "cloudbuild", "TAG=t", f"CONFIG={config}", "PROJECT=q").stdout
    assert "--project 'q'" in out  # the command line wins over the file
    bad = tmp_path / "bad.env"
    bad.write_text("PROJECT=p\noops\n")
    result = _make("-n", "build-cpu", "TAG=t", f"CONFIG={bad}")
    assert result.returncode != 0 and "containers/build.sh" not in result.stdout
    assert f"*** {bad}:2: expected KEY=VALUE, got 'oops'.  Stop." in result.stderr
    assert "Traceback" not in result.stderr
    assert _make("-n", "help", f"CONFIG={bad}").returncode == 0  # targets that use no setting never read it


def test_a_key_given_twice_is_refused_not_silently_the_last(tmp_path):
    config = tmp_path / "submit.env"
    config.write_text("PROJECT=my-proj\n# later\nREGION=europe-west4\n\nPROJECT=dup-proj\n")
    with pytest.raises(ConfigError, match=re.escape(f"{config}:5: PROJECT is set again (first on line 1)")):
        read_env_file(config)
    yaml_config = tmp_path / "submit.yaml"
    yaml_config.write_text("project: a\nPROJECT: b\n")
    with pytest.raises(ConfigError, match="PROJECT given twice"):
        read_config(yaml_config)


def test_a_parameter_at_the_top_of_a_yaml_file_is_pointed_under_parameters(tmp_path):
    config = tmp_path / "submit.yaml"
    config.write_text("PROJECT: p\nPARAM_data_source: gs://b/fer2013.zip\n")
    with pytest.raises(ConfigError, match=r"PARAM_data_source at the top level; .*parameters: \{data_source: \.\.\.\}"):
        read_config(config)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize(
    "target, variable",
    [
        ("run-local", "PRESET"),
        ("run-local", "EPOCHS"),
        ("run-local", "SAMPLES"),
        ("run-containers", "TRAIN_IMAGE"),
        ("compile", "GPU_COUNT"),
        ("serve", "PORT"),
        ("kfp-forward", "KFP_PORT"),
        ("infra-plan", "TF_DIR"),
        ("cloudbuild", "TAG"),
        ("tensorboard", "TB_PORT"),
        ("runs-compare", "LAST"),
        ("kind-up", "KFP_VERSION"),
    ],
)
def test_a_make_value_reaches_the_shell_as_one_quoted_word(target, variable):
    """A value is the option's text, never shell: `make compile GPU_COUNT='1;touch x'` ran `touch`."""
    hostile = "1;touch x'y"
    out = _make("-n", target, f"{variable}={hostile}", "PROJECT=p", "REGION=europe-west4").stdout
    assert "1;touch x'\\''y'" in out, out  # inside one single-quoted word, its own quote escaped
    assert "1;touch x'y" not in out


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("s.yaml", "PROJECT: a\nREGION: r\nPROJECT: b\n", "s.yaml:3: PROJECT given twice (first on line 1)"),
        ("s.json", '{"PROJECT": "a",\n "PROJECT": "b"}', "s.json:2: PROJECT given twice (first on line 1)"),
        (
            "s.yml",
            "parameters:\n  frozen_epochs: 2\n  frozen_epochs: 3\n",
            "s.yml:3: frozen_epochs given twice (first on line 2)",
        ),
    ],
)
def test_a_key_given_twice_in_json_or_yaml_is_refused_with_both_lines(tmp_path, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_config(config)


def test_a_list_as_a_yaml_key_is_one_line_not_a_traceback(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("? [a, b]\n: 1\nPROJECT: p\n")
    with pytest.raises(ConfigError, match=re.escape("s.yaml:1: not valid YAML (found unhashable key)")):
        read_config(config)


def test_a_yaml_merge_key_is_not_a_key_given_twice(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("base: &b {x: 1}\nparameters:\n  recipe:\n    <<: *b\n    x: 2\n")
    assert read_config(config)["PARAM_recipe"] == {"x": 2}


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_stops_on_a_named_config_that_does_not_exist(tmp_path):
    missing = tmp_path / "absent.env"
    result = _make("-n", "compile", f"CONFIG={missing}")
    assert result.returncode != 0 and "pipelines.compile" not in result.stdout
    assert f"*** Config file {missing} not found (copy config/submit.example.env).  Stop." in result.stderr
    if not (ROOT / "config/submit.env").exists():  # the default file may be absent: the environment may say it all
        assert _make("-n", "compile").returncode == 0
