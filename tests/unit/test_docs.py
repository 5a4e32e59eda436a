"""The README is a user guide and the CI runs what it tells users to run; code and configs carry no
dated measurements or issue numbers (those live in docs/results/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
ISSUE = re.compile(r"\bissue[ -]?#?\d+", re.IGNORECASE)


def _setup_commands() -> list[str]:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_is_a_short_undated_guide():
    assert len(README.splitlines()) <= 300
    assert not DATE.findall(README), "dated measurements belong in docs/results/"


def test_ci_runs_the_readmes_test_command():
    install_and_test = _setup_commands()[1]
    install, test = (part.strip() for part in install_and_test.split("&&"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci
    assert test in ci


def test_code_and_configs_carry_no_dates_or_issue_numbers():
    offenders = []
    sources = (("codeunlearn", "*.py"), ("configs", "*.yaml"), ("flows", "*.py"), ("tasks", "*.py"))
    for folder, pattern in sources:
        for path in sorted((ROOT / folder).rglob(pattern)):
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in DATE.findall(text) + ISSUE.findall(text)]
    assert offenders == []
