"""The README is the front door: its first two commands set up and run the quickstart and the tests (CI runs the
same test command), it stays short, and every page of docs/ is reachable from it through links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _first_commands() -> list[str]:
    block = README.read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_opens_with_the_quickstart_then_the_tests():
    quickstart, tests = _first_commands()[:2]
    assert quickstart.endswith(
        "ftc compile examples/quickstart/job.yaml -o runs/quickstart/plan.json && ftc run runs/quickstart/plan.json"
    )
    assert tests.endswith("&& python -m pytest tests")
    assert "python -m pytest tests" in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()[-1]


def test_the_readme_is_a_front_door_not_the_manual():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = {(REPO / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text(encoding="utf-8"))}
    assert sorted(p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked) == []


def test_links_between_the_readme_and_docs_resolve():
    broken = []
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            found = (page.parent / path).resolve() if path else page
            if not found.exists() or (anchor and found.suffix == ".md" and anchor not in _anchors(found)):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_every_test_the_hostile_inputs_page_names_exists():
    """docs/hostile-inputs.md names a regression test for each hostile input: a renamed or deleted test must not
    leave a row pointing at nothing."""
    text = (REPO / "docs" / "hostile-inputs.md").read_text(encoding="utf-8")
    named = re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text)
    assert len(named) > 150
    missing = []
    for file, name in named:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif name and not re.search(rf"^(async )?def {name}\b|^    def {name}\b", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    assert missing == []
