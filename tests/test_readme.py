"""The README's two opening commands are what CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, re.S)[:2]


def test_readme_opens_with_install_and_run_then_install_and_test():
    run, test = readme_commands()
    assert run.startswith("pip install") and "-np 2" in run
    assert test.startswith("pip install") and "pytest" in test


def test_ci_runs_the_readme_test_command():
    _, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, pytest_cmd = test.partition(" && ")
    assert install in ci and pytest_cmd in ci
    assert "-eq 5" in ci  # pytest's "no tests collected" fails CI
