"""Check the built HTML docs in headless Chromium: every module page renders with its examples.

    python tests/docs/check_html.py HTML_DIR JUNIT_FILE SCREENSHOT_DIR

For each module in plugins/modules/, Chromium loads its page and we read the DOM it rendered:
the title names the module, there is an Examples section, and the name of every task in the
module's EXAMPLES is on the page. The filter and role pages must render with their title. One
JUnit test case per page; a screenshot of each module page goes to SCREENSHOT_DIR.
"""

from __future__ import annotations

import ast
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import yaml

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "onekvm.fleet"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_args(binary: str) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def rendered_text(binary: str, page: Path) -> str:
    """The page's DOM after Chromium ran it, as plain text."""
    dom = subprocess.run(
        [*browser_args(binary), "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


def screenshot(binary: str, page: Path, png: Path) -> None:
    subprocess.run(
        [*browser_args(binary), f"--screenshot={png}", "--window-size=1280,1600", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )


def example_task_names(module: Path) -> list[str]:
    """The `name:` of every task in the module's EXAMPLES (read without importing it)."""
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "EXAMPLES" for t in node.targets
        ):
            tasks = yaml.safe_load(ast.literal_eval(node.value)) or []
            return [task["name"] for task in tasks if isinstance(task, dict) and "name" in task]
    return []


def check_module(binary: str, html_dir: Path, module: Path, shots: Path) -> str | None:
    name = module.stem
    page = html_dir / "collections" / "onekvm" / "fleet" / f"{name}_module.html"
    if not page.is_file():
        return f"{page} was not built"
    text = rendered_text(binary, page)
    problems = []
    if f"{COLLECTION}.{name} module" not in text:
        problems.append(f"the page has no title '{COLLECTION}.{name} module'")
    if "Examples" not in text:
        problems.append("the page has no Examples section")
    expected = example_task_names(module)
    if not expected:
        problems.append("the module's EXAMPLES has no named task")
    problems += [f"example task '{task}' is not on the page" for task in expected if task not in text]
    screenshot(binary, page, shots / f"{name}_module.png")
    return "; ".join(problems) or None


def check_titled(binary: str, page: Path, title: str) -> str | None:
    if not page.is_file():
        return f"{page} was not built"
    return None if title in rendered_text(binary, page) else f"the page has no title '{title}'"


def main(html_dir: Path, junit: Path, shots: Path) -> int:
    html_dir = html_dir.resolve()
    binary = chromium()
    shots.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, str | None, bool]] = []   # (name, failure, skipped)
    pages = ROOT / "plugins"
    modules = sorted(p for p in (pages / "modules").glob("*.py") if p.name != "__init__.py")
    for module in modules:
        case = f"module page {module.stem}"
        if binary is None:
            cases.append((case, None, True))
            continue
        try:
            cases.append((case, check_module(binary, html_dir, module, shots), False))
        except (subprocess.SubprocessError, OSError, yaml.YAMLError) as exc:
            cases.append((case, f"{type(exc).__name__}: {exc}", False))
    base = html_dir / "collections" / "onekvm" / "fleet"
    others = [(f"role page {p.name}", base / f"{p.name}_role.html", f"{COLLECTION}.{p.name} role")
              for p in sorted((ROOT / "roles").iterdir()) if p.is_dir()]
    for path in sorted(base.glob("*_filter.html")):
        filt = path.name[: -len("_filter.html")]
        others.append((f"filter page {filt}", path, f"{COLLECTION}.{filt} filter"))
    for case, page, title in others:
        if binary is None:
            cases.append((case, None, True))
            continue
        try:
            cases.append((case, check_titled(binary, page, title), False))
        except (subprocess.SubprocessError, OSError) as exc:
            cases.append((case, f"{type(exc).__name__}: {exc}", False))

    suites = ElementTree.Element("testsuites")
    suite = ElementTree.SubElement(suites, "testsuite", name="docs in chromium")
    for case, failure, skipped in cases:
        element = ElementTree.SubElement(suite, "testcase", classname="docs", name=case)
        if skipped:
            ElementTree.SubElement(element, "skipped", message="chromium is not installed")
        elif failure:
            ElementTree.SubElement(element, "failure", message=failure)
    ElementTree.ElementTree(suites).write(junit, encoding="utf-8", xml_declaration=True)
    for case, failure, skipped in cases:
        print(f"{case}: {'skipped (no chromium)' if skipped else failure or 'ok'}")
    return 1 if any(case[1] for case in cases) else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
