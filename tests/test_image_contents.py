"""Every package a component can import is installed in the image it runs in, and every
extra an image installs is needed by some component. Offline and cheap: no image is
built or run. The check follows each component function's imports through the
fer_pipeline modules it reaches (lazy imports inside functions too, where optional
dependencies hide: a missing `kagglehub` was found this way), and compares the
third-party top-level names with the distributions the image's requirement set pulls
in (containers/install.sh's extras, resolved through this environment's metadata)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement

import components
from components.images import CPU_IMAGE, GPU_IMAGE

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "fer_pipeline"
IMAGES = {CPU_IMAGE: "cpu", GPU_IMAGE: "gpu"}
# The GPU image installs tensorflow[and-cuda] at the version of tensorflow-cpu here: the
# same module and dependencies, so this environment's tensorflow-cpu stands in for it.
GPU_SWAP = {"tensorflow": "tensorflow-cpu"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_extras() -> list[str]:
    match = re.search(r'^extras="([^"]+)"', (ROOT / "containers" / "install.sh").read_text(), re.M)
    assert match, 'containers/install.sh must name the image extras as extras="a,b"'
    return match.group(1).split(",")


def image_requirements(variant: str, extras: list[str]) -> list[str]:
    spec = importlib.util.spec_from_file_location("pyproject_reqs", ROOT / "containers" / "pyproject_reqs.py")
    reqs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reqs)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    if variant == "gpu":
        return reqs.requirements(pyproject, extras, ["tensorflow-cpu"], ["tensorflow[and-cuda]"])
    return reqs.requirements(pyproject, extras, [], [])


def distribution_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions these requirements install (transitively)."""
    env = default_environment()
    seen: set[str] = set()
    pending = [(Requirement(r), ()) for r in requirements]
    while pending:
        req, _ = pending.pop()
        name = _canonical(GPU_SWAP.get(_canonical(req.name), req.name))
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in ("", *req.extras)):
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. the NVIDIA wheels of the GPU image: no Python module of ours imports them
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in ("", *req.extras)):
                pending.append((sub, ()))
    return seen


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    base = SRC.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Absolute names every import statement in ``tree`` names (at any depth)."""
    names = set()
    package = (
        module if _module_file(module) and _module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            # `from fer_pipeline import x` may name a submodule
            names |= {f"{target}.{alias.name}" for alias in node.names if _module_file(f"{target}.{alias.name}")}
    return names


def third_party_imports(source: str) -> dict[str, set[str]]:
    """Top-level third-party import names reached from ``source`` -> the modules importing them."""
    found: dict[str, set[str]] = {}
    todo, done = [("<component>", ast.parse(source))], set()
    while todo:
        module, tree = todo.pop()
        for name in _imports(tree, module):
            top = name.split(".")[0]
            if top == PACKAGE:
                # every package on the way is imported too (its __init__ runs)
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    sub = ".".join(parts[:i])
                    path = _module_file(sub)
                    if path and sub not in done:
                        done.add(sub)
                        todo.append((sub, ast.parse(path.read_text())))
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(module)
    return found


def provided_imports(distributions: set[str]) -> set[str]:
    by_import = metadata.packages_distributions()
    return {name for name, dists in by_import.items() if any(_canonical(d) in distributions for d in dists)}


COMPONENTS = {name: getattr(components, name) for name in components.__all__}


def component_image(component) -> str:
    return IMAGES[component.component_spec.implementation.container.image]


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_import_of_a_component_is_installed_in_its_image(name):
    component = COMPONENTS[name]
    variant = component_image(component)
    installed = provided_imports(distribution_closure(image_requirements(variant, image_extras())))
    needed = third_party_imports(inspect.getsource(component.python_func))
    missing = {top: sorted(where) for top, where in needed.items() if top not in installed}
    assert not missing, f"{name} ({variant} image) imports packages the image lacks: {missing}"


def test_every_extra_in_the_images_is_needed_by_some_component():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = set()
    for component in COMPONENTS.values():
        needed |= set(third_party_imports(inspect.getsource(component.python_func)))
    for extra in image_extras():
        provided = provided_imports(distribution_closure(pyproject["project"]["optional-dependencies"][extra]))
        assert provided & needed, (
            f"the images install extra {extra!r} but no component imports any of {sorted(provided)[:8]}"
        )


def test_the_check_sees_lazy_imports_and_missing_packages():
    """The checker itself: an import inside a function is found, and a package that is not
    in the set is reported (kagglehub without the kaggle extra, cv2 without detect)."""
    needed = third_party_imports("def f():\n    from fer_pipeline.steps import ingest_step\n")
    assert "kagglehub" in needed and "fer_pipeline.steps" in needed["kagglehub"]
    without_kaggle = provided_imports(distribution_closure(image_requirements("cpu", ["pipeline"])))
    assert "kagglehub" not in without_kaggle and "kfp" in without_kaggle
    assert "cv2" not in provided_imports(distribution_closure(image_requirements("cpu", image_extras())))


def test_every_shipped_model_file_is_package_data():
    """The images pip-install the package, so a model file the package-data globs miss is
    in the repository and the tests but not in any image (the ensemble's detectors load
    them at run time)."""
    import fnmatch

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][PACKAGE]
    files = [p.relative_to(SRC / PACKAGE).as_posix() for p in (SRC / PACKAGE / "models").iterdir() if p.is_file()]
    assert {"models/centerface.onnx", "models/face_detection_back.tflite", "models/NOTICE"} <= set(files)
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missed, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missed}"
