"""The documentation agrees with the code where that is cheap to check: metric names both ways,
settings both ways, condition types, reasons and phases the code can write, the default PromQL
templates, and every relative link (with its anchor) in docs/ and the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hetplace.api.status import Phase
from hetplace.config import DEFAULT_QUERIES, Settings
from hetplace.k8s.status import CONDITION_TYPES, POOL_CONDITION_TYPES
from hetplace.metrics import OperatorMetrics
from hetplace.site.telemetry import SiteMetrics

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
OPERATING = DOCS / "operating.md"
CODE = "\n".join(p.read_text() for p in sorted((REPO / "operator" / "hetplace").rglob("*.py")))
TEST_CODE = "\n".join(p.read_text() for p in sorted((REPO / "tests").rglob("*.py")) if p.name != "test_docs.py")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def prose(path: Path) -> str:
    """A page without its fenced code blocks."""
    return FENCE.sub("", path.read_text())


def section(path: Path, heading: str) -> str:
    """The text under `## heading`, up to the next heading of that level."""
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def first_cells(table_text: str) -> list[str]:
    """The backticked names in the first column of the markdown tables in `table_text`."""
    return [m for line in table_text.splitlines() if line.startswith("| `")
            for m in re.findall(r"`([^`]+)`", line.split("|")[1])]


def exposed_metric_names() -> set[str]:
    names = set()
    for family in OperatorMetrics().registry.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_the_metrics_table_names_exactly_the_registered_metrics() -> None:
    documented = first_cells(section(OPERATING, "Metrics"))
    assert len(documented) == len(set(documented)), "a metric listed twice"
    assert set(documented) == exposed_metric_names()


def site_metric_names() -> set[str]:
    """What `hetplace gateway` and `hetplace.client` expose (docs/telemetry.md)."""
    return {family.name + "_total" if family.type == "counter" else family.name
            for family in SiteMetrics("a-site").registry.collect()}


def test_every_hetplace_series_named_in_the_docs_is_registered_or_read_by_a_template() -> None:
    registered = exposed_metric_names() | site_metric_names()
    histogram_parts = {f"{n}{suffix}" for n in registered for suffix in ("_bucket", "_sum", "_count")}
    templates = " ".join(DEFAULT_QUERIES.values())
    for page in PAGES:
        for name in set(re.findall(r"\bhetplace_[a-z_]+", page.read_text())):
            assert name in registered | histogram_parts or name in templates, f"{page.name}: {name}"


def test_every_setting_is_in_the_settings_table_and_no_other() -> None:
    documented = first_cells(section(OPERATING, "Settings"))
    assert set(documented) == {f"HETPLACE_{field.upper()}" for field in Settings.model_fields}


def test_every_hetplace_variable_named_in_the_docs_is_read_by_the_code_or_the_tests() -> None:
    settings = {f"HETPLACE_{field.upper()}" for field in Settings.model_fields}
    for page in PAGES:
        for variable in set(re.findall(r"\bHETPLACE_[A-Z_]*[A-Z]", page.read_text())):
            assert variable in settings or f'"{variable}"' in CODE or variable in TEST_CODE, \
                f"{page.name}: {variable} is read by nothing"


def test_documented_condition_types_are_the_ones_the_code_writes() -> None:
    table = section(OPERATING, "Phases and conditions")
    documented = set(first_cells(table[table.index("| type |"):]))
    assert documented == set(CONDITION_TYPES)
    pool_part = table[table.index("A `ComputePool` has"):]
    assert set(re.findall(r"`(\w+)` \(True", pool_part)) == set(POOL_CONDITION_TYPES)


def test_every_condition_reason_documented_is_a_string_the_code_writes() -> None:
    table = section(OPERATING, "Phases and conditions")
    reasons = {r for line in table.splitlines() if line.startswith("| `")
               for r in re.findall(r"`([A-Z][A-Za-z]+)`", line.split("|", 2)[2])}
    reasons |= set(re.findall(r"(?:True|False) `([A-Z][A-Za-z]+)`", table))
    assert {"Infeasible", "ApplyRefused", "PrometheusError", "NoReadyNodes"} <= reasons, "the table was read"
    for reason in reasons:
        assert f'"{reason}"' in CODE, f"condition reason {reason} is written nowhere in operator/hetplace"


def test_documented_phases_are_the_api_phases() -> None:
    documented = set(first_cells(section(OPERATING, "Phases and conditions").split("| type |")[0]))
    assert documented == {p.value for p in Phase}


def test_every_event_reason_documented_is_one_the_controller_can_record() -> None:
    documented = set(first_cells(section(OPERATING, "Events")))
    controller = "\n".join(p.read_text() for p in (REPO / "operator" / "hetplace" / "controller").glob("*.py"))
    for reason in documented:
        assert f'"{reason}"' in controller, f"Event reason {reason} is recorded nowhere in the controller"
    recorded_literally = {r for line in controller.splitlines() if "Note(" in line or ".event(" in line
                          for r in re.findall(r'"([A-Z][A-Za-z]+)"', line)} - {"Normal", "Warning", "InferenceWorkload",
                                                                                 "ComputePool"}
    assert recorded_literally <= documented, f"recorded but not documented: {recorded_literally - documented}"


def test_the_default_templates_in_telemetry_md_are_the_codes() -> None:
    text = (DOCS / "telemetry.md").read_text()
    block = re.search(r"The defaults, in that format:\s*```json\n(.*?)```", text, re.S)
    assert block is not None
    assert json.loads(block.group(1)) == DEFAULT_QUERIES


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(page), re.M)}


def links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose(page)):
            if not re.match(r"[a-z]+:", target):
                found.append((page, target))
    return found


@pytest.mark.parametrize("page, target", [pytest.param(p, t, id=f"{p.name} -> {t}") for p, t in links()])
def test_relative_links_resolve(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.exists(), f"{page.name}: {target} points at nothing"
    if anchor:
        assert anchor in anchors(destination), f"{page.name}: no heading for #{anchor} in {destination.name}"


def test_the_readme_lists_every_docs_page() -> None:
    linked = {t for p, t in links() if p.name == "README.md"}
    assert {f"docs/{p.name}" for p in DOCS.glob("*.md")} <= linked


def test_the_repository_cites_its_own_design_not_one_outside_it() -> None:
    """Docs, help texts and comments cite docs/design.md; nothing points outside the repository."""
    tracked = [p for p in REPO.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".txt", ".toml")
               and not any(part.startswith(".") or part.endswith(".egg-info") for part in p.relative_to(REPO).parts)
               and "results" not in p.relative_to(REPO).parts]
    tracked.append(REPO / "Makefile")
    outside = [f"{p.relative_to(REPO)}:{n}" for p in tracked if p.name != "test_docs.py"
               for n, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"\bDESIGN\b|\.\./shared", line)]
    assert outside == []
    cited = set(re.findall(r"docs/design\.md §(\d+)", CODE + TEST_CODE + "".join(p.read_text() for p in PAGES)))
    headings = set(re.findall(r"^## (\d+)\.", (DOCS / "design.md").read_text(), re.M))
    assert cited and cited <= headings, f"cited sections {sorted(cited - headings)} are not in docs/design.md"
