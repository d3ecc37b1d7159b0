"""The README's two commands: the second installs what the tests need, and CI runs the same."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ")]


def test_the_second_command_installs_the_test_extra_and_ci_runs_it():
    install, test = _commands()[:2]
    assert install.startswith("pip install -e .") and "python -m trainers.ganem" in install
    assert test == 'pip install -e ".[test]" && python -m pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test]"' in ci and ci.strip().splitlines()[-1] == "python -m pytest"
    setup = (ROOT / "setup.py").read_text()
    assert '"test": ["pytest"' in setup
