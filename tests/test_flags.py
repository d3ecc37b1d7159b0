"""The flag vocabulary every trainer shares: one spelling per meaning, the old spellings
still accepted for one release with a note."""

import json

import pytest

from trainers import common, driver
from zoo import registry

TRAINERS = sorted(registry.MODELS)


def rates_of(name):
    return driver.task_of(name).config_class.learning_rates()


def parse(name, argv):
    """The learning rates as a run would use them: flags, then --paper, then the defaults."""
    args = driver.task_of(name).parse(argv)
    args.resolve_paper()
    args.resolve_defaults()
    return args


@pytest.mark.parametrize("name", TRAINERS)
def test_every_trainer_names_its_learning_rates_lr_network(name, capsys):
    rates = rates_of(name)
    argv = [token for key in rates for token in (f"--lr-{key}", "0.5")]
    args = parse(name, argv)
    assert {key: getattr(args, f"lr_{key}") for key in rates} == {key: 0.5 for key in rates}
    assert "deprecated" not in capsys.readouterr().err


@pytest.mark.parametrize("name, old, networks", [
    ("clustergan", "--lr", "gde"), ("kmgan", "--lr", "gd"),
    ("gmgan", "--lr", "d"), ("gmgan", "--g-lr", "g"), ("gmgan", "--e-lr", "e"),
])
def test_old_spellings_still_work_with_a_note(name, old, networks, capsys):
    args = parse(name, [old, "0.123"])
    rates = rates_of(name)
    for key in rates:
        assert getattr(args, f"lr_{key}") == (0.123 if key in networks else rates[key])
    err = capsys.readouterr().err
    assert f"{old} is deprecated" in err and all(f"--lr-{key}" in err for key in networks)


@pytest.mark.parametrize("clusters, batch_size, message", [
    (1, 64, "--clusters must be at least 2 (got 1)"),
    (6000, 64, "--clusters 6000 exceeds the number of samples (5000)"),
    (10, 6000, "--batch-size 6000 exceeds the number of samples (5000)"),
])
def test_clusters_and_batch_size_must_fit_the_dataset(clusters, batch_size, message):
    common.check_fits(2, 5000, 5000)
    with pytest.raises(common.UsageError) as error:
        common.check_fits(clusters, batch_size, 5000)
    assert str(error.value) == message


def test_no_judge_is_score_samples_0(capsys):
    assert parse("kmgan", ["--no-judge"]).score_samples == 0
    err = capsys.readouterr().err
    assert "--no-judge is deprecated" in err and "use --score-samples 0" in err
    assert parse("kmgan", []).score_samples > 0


def test_a_learning_rate_must_be_positive():
    with pytest.raises(common.UsageError, match="--lr-d must be positive"):
        parse("kmgan", ["--lr-d", "0"])


def test_paper_rates_apply_where_no_rate_is_given():
    args = parse("clustergan", ["--paper", "--lr-g", "3e-4"])
    assert (args.lr_g, args.lr_d, args.lr_e) == (3e-4, 1e-4, 1e-4)


@pytest.mark.parametrize("name, old", [("ganem", "--em-iterations"), ("clustergan", "--generator-steps"),
                                       ("gmgan", "--gan-steps"), ("kmgan", "--train-steps")])
def test_every_trainer_counts_its_length_in_iterations(name, old, capsys, tmp_path):
    assert parse(name, ["--iterations", "7"]).iterations == 7
    assert "deprecated" not in capsys.readouterr().err
    assert parse(name, [old, "8"]).iterations == 8
    assert f"{old} is deprecated" in capsys.readouterr().err
    # A run saved before the rename resumes with its length.
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({old[2:].replace("-", "_"): 9, "seed": 2}))
    assert common.saved_config(driver.task_of(name).build_parser(), saved) == {"iterations": 9, "seed": 2}
