"""One configuration per model: the flags, their help, defaults and checks come from the
trainer's `Config` dataclass, which the Python API takes whole and which config.json holds;
the models' constructors and compile() take their defaults from the same fields."""

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from trainers import common, driver
from trainers.config import RunConfig
from zoo import registry

NAMES = sorted(registry.MODELS)
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_is_a_config_field_with_help_and_its_default(name):
    task = driver.task_of(name)
    parser = task.build_parser()
    fields = {f.name: f for f in dataclasses.fields(task.config_class)}
    assert set(parser.actions) == set(fields)
    for field_name, action in parser.actions.items():
        assert action.option_strings[0] == "--" + field_name.replace("_", "-")
        assert action.help and len(action.help) > 10
        assert action.default == fields[field_name].default
    # Every flag --help shows is one of those, or an old spelling kept for a release (hidden).
    shown = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", parser.format_help(), re.M)) - {"--help"}
    assert shown == {action.option_strings[0] for action in parser.actions.values()}


@pytest.mark.parametrize("name", NAMES)
def test_flags_and_the_python_config_build_the_same_run(name):
    task = driver.task_of(name)
    config_class = task.config_class
    assert task.parse([]) == config_class()
    assert task.parse(["--dataset", "digits", "--clusters", "7", "--latent-dim", "9", "--seed", "3"]) == \
        config_class(dataset="digits", clusters=7, latent_dim=9, seed=3)


@pytest.mark.parametrize("name", NAMES)
def test_model_constructors_default_to_the_config(name):
    """The Python API's model and the trainer's agree wherever a constructor argument is a field
    (but for those the trainer sets from the data, whose --help says how: GAN-EM's augment)."""
    model_class = registry.model_class(name)
    config_class = driver.task_of(name).config_class
    fields = config_class.__dataclass_fields__
    shared = [p for p in inspect.signature(model_class.__init__).parameters.values()
              if p.name in fields and p.default is not inspect.Parameter.empty
              and not fields[p.name].metadata.get("default_text")]
    assert len(shared) >= 3
    for parameter in shared:
        assert parameter.default == config_class.default(parameter.name), parameter.name
    assert model_class.learning_rates == config_class.learning_rates()


@pytest.mark.parametrize("name, field, value, message", [
    ("ganem", "latent_dim", 0, "--latent-dim must be positive (got 0)"),
    ("ganem", "iterations", "4", "--iterations must be an integer (got str '4')"),
    ("clustergan", "init", "spectral", "--init must be one of none, kmeans, gmm, umap (got spectral)"),
    ("gmgan", "lr_g", -1.0, "--lr-g must be positive (got -1.0)"),
    ("kmgan", "clusters", 1, "--clusters must be at least 2 (got 1)"),
    ("kmgan", "nan_lr_factor", float("nan"), "--nan-lr-factor must lie in (0, 1) (got nan)"),
])
def test_a_bad_python_config_is_the_command_lines_one_line_error(name, field, value, message):
    task = driver.task_of(name)
    with pytest.raises(common.UsageError) as error:
        driver.train(task, task.config_class(**{field: value}))
    assert str(error.value) == message


@pytest.mark.parametrize("name", NAMES)
def test_the_paper_is_one_field_away(name):
    config_class = driver.task_of(name).config_class
    paper = config_class.paper_values()
    assert "init" in paper
    config = config_class(paper=True)
    config.resolve_paper()
    assert all(getattr(config, key) == value for key, value in paper.items())
    config = config_class(paper=True, init="kmeans")  # what is given wins
    config.resolve_paper()
    assert config.init == "kmeans"


def test_run_config_fields_are_every_trainers():
    for name in NAMES:
        assert issubclass(driver.task_of(name).config_class, RunConfig)


def test_config_json_is_the_config(tmp_path):
    """A short run from a Config writes config.json with every field, which reads back to the
    same Config (after the trainer's data-dependent defaults)."""
    from trainers import kmgan

    config = kmgan.Config(dataset="digits", clusters=4, max_steps=2, init="none", iterations=2, score_samples=0,
                          run_dir=str(tmp_path / "run"), quiet=True, no_export=True, seed=5)
    assert kmgan.main(config) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(kmgan.Config)} - {"run_dir"}
    # The run's config: the given fields, with the defaults resolved for this data.
    assert kmgan.Config(**saved) == dataclasses.replace(config, pseudo_labels=0.5, run_dir=None)


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = text.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "digits" / "export").is_dir()
