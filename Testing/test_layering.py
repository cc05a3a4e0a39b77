"""Import layering of MedSegCNNLib, read from the source with :mod:`ast` (nothing is imported).

An edge ``A -> B`` is any ``import``/``from ... import`` of library module ``B`` written anywhere in module ``A``:
at module level, inside a function, or under ``TYPE_CHECKING``. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``). A package is module ``pkg`` (its
``__init__.py``); importing ``pkg.sub`` is not counted as importing ``pkg`` as well. The rules:

(a) no import cycles between modules;
(b) no module imports a component (``MedSegCNNLib.<component>``) from a layer above its own (:data:`LAYERS`);
(c) ``inference`` does not import ``training`` and ``training`` does not import ``inference``, except
    :data:`TRAINING_USES_INFERENCE`;
(d) no module outside the command line (:data:`COMMAND_LINE`) imports ``MedSegCNNLib.cli``.

Edges in :data:`EXCEPTIONS` are exempt from every rule; each must name an edge that still exists.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Mapping
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "MedSegCNNLib"

Graph = Mapping[str, set[str]]
"""Module name -> the library modules it imports."""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_version", "records"),  # import nothing of the library but errors
    ("atomic", "runtime", "progress", "distributed", "folder_lock"),  # safe writes; devices, autocast; progress;
    # torchrun's group; folder locks
    ("image", "networks", "losses"),  # images and their files; network architectures; loss functions
    ("data", "metrics", "postprocessing", "visualization"),  # datasets and preprocessing; metrics and reports
    ("checkpoint",),  # model folders, model cards, training state (uses data plans and networks)
    ("registry", "interop"),  # trained models by name (their model cards); models of other tools imported
    ("inference",),  # loading a model and segmenting an image
    ("export",),  # a model's network as ONNX or OpenVINO IR with its sidecar, checked against the engine
    ("training",),  # the trainer; its validation uses the inference API
    ("demo",),  # train, segment and evaluate a bundled dataset end to end
    ("annotation",),  # annotation projects: segment, correct, accept, learn in the background
    ("jobs",),  # running the command line in another process (for Slicer)
    ("mrml",),  # the Slicer scene
    ("cli", "__main__"),  # the command line and its entry point
    ("",),  # MedSegCNNLib/__init__.py: the public API
)
"""Components from the bottom layer up; a component may import its own layer and those below it."""

COMMAND_LINE = ("MedSegCNNLib.cli", "MedSegCNNLib.__main__")
"""The command line: the only modules that may import ``MedSegCNNLib.cli`` (rule d)."""

TRAINING_USES_INFERENCE = {("MedSegCNNLib.training.validation", "MedSegCNNLib.inference")}
"""The imports between ``training`` and ``inference`` allowed (rule c): validation through the public API."""

EXCEPTIONS: dict[tuple[str, str], str] = {}
"""Known violations, each with the reason and the change that removes it."""


def module_name(path: Path, root: Path) -> str:
    """``MedSegCNNLib.image.io`` for ``<root>/image/io.py``; a package's ``__init__.py`` is the package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """The library-internal import edges of every module under the package folder ``root``."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    return {module: _imported_modules(module, path, root.name, set(paths)) - {module} for module, path in paths.items()}


def _imported_modules(module: str, path: Path, package: str, known: set[str]) -> set[str]:
    """The modules of ``package`` that ``module`` (the file ``path``) imports anywhere in its body."""
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(target)
    return {name for name in found if name.split(".")[0] == package}


def component(module: str) -> str:
    """``image`` for ``MedSegCNNLib.image.io``; ``""`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycles(graph: Graph, exceptions: Collection[tuple[str, str]] = ()) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected group of modules (Tarjan's algorithm), sorted."""
    edges = {
        module: sorted(t for t in targets if t in graph and (module, t) not in exceptions)
        for module, targets in graph.items()
    }
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(_cycle_through(group, edges) for group in groups)


def _cycle_through(group: list[str], edges: Mapping[str, list[str]]) -> list[str]:
    """A closed path from ``group[0]`` back to itself inside ``group`` (breadth-first: a shortest one)."""
    start, members = group[0], set(group)
    paths = {target: [start, target] for target in edges[start] if target in members}
    queue = list(paths)
    while start not in paths:
        module = queue.pop(0)
        for target in edges[module]:
            if target in members and target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    return paths[start]


def layer_violations(
    graph: Graph, layers: tuple[tuple[str, ...], ...], exceptions: Collection[tuple[str, str]] = ()
) -> list[str]:
    """Each import of a component from a layer above the importer's, and each component no layer names."""
    level = {name: number for number, names in enumerate(layers) for name in names}
    problems = [
        f"{module}: component {component(module)!r} has no layer" for module in graph if component(module) not in level
    ]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            source_level, target_level = level.get(component(module)), level.get(component(target))
            if source_level is None or target_level is None or (module, target) in exceptions:
                continue
            if target_level > source_level:
                problems.append(f"{module} (layer {source_level}) imports {target} (layer {target_level})")
    return problems


def inference_training_violations(
    graph: Graph, allowed: Collection[tuple[str, str]], exceptions: Collection[tuple[str, str]] = ()
) -> list[str]:
    """Each import between ``inference`` and ``training`` that ``allowed`` does not list."""
    pair = {"inference", "training"}
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if {component(module), component(target)} == pair
        and (module, target) not in allowed
        and (module, target) not in exceptions
    ]


def command_line_imports(
    graph: Graph, command_line: tuple[str, ...], exceptions: Collection[tuple[str, str]] = ()
) -> list[str]:
    """Each import of ``MedSegCNNLib.cli`` by a module outside ``command_line``."""

    def inside(module: str) -> bool:
        return any(module == root or module.startswith(root + ".") for root in command_line)

    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if component(target) == "cli" and not inside(module) and (module, target) not in exceptions
    ]


# ----- the library ---------------------------------------------------------------------------------------------


def test_no_import_cycles():
    cycles = find_cycles(import_graph(LIBRARY), EXCEPTIONS)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_a_layer_above_it():
    assert layer_violations(import_graph(LIBRARY), LAYERS, EXCEPTIONS) == []


def test_inference_and_training_import_each_other_only_through_validation():
    assert inference_training_violations(import_graph(LIBRARY), TRAINING_USES_INFERENCE, EXCEPTIONS) == []


def test_only_the_command_line_imports_cli():
    assert command_line_imports(import_graph(LIBRARY), COMMAND_LINE, EXCEPTIONS) == []


def test_every_exception_is_still_needed():
    graph = import_graph(LIBRARY)
    stale = [edge for edge in EXCEPTIONS if edge[1] not in graph.get(edge[0], set())]
    assert stale == [], "these imports are gone; remove them from EXCEPTIONS"


# ----- the checker, on a synthetic package ---------------------------------------------------------------------


def _write_package(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_finds_each_kind_of_violation(tmp_path):
    root = tmp_path / "MedSegCNNLib"
    _write_package(
        root,
        {
            "__init__.py": "from .image.io import read\n",
            "errors.py": "",
            "image/__init__.py": "",
            "image/io.py": "from . import dicom\n",
            "image/dicom.py": "def read():\n    from .io import read  # a cycle through a function-level import\n",
            "image/geometry.py": "from ..inference import segment  # upward\n",
            "inference/__init__.py": "from ..training import trainer\n",
            "training/__init__.py": "",
            "training/trainer.py": "from ..errors import InputError\n",
            "training/validation.py": "from ..inference import segment\n",
            "demo.py": "import MedSegCNNLib.cli.main\n",
            "cli/__init__.py": "",
            "cli/main.py": "from ..demo import run\n",
        },
    )
    graph = import_graph(root)
    layers = (("errors",), ("image",), ("inference",), ("training",), ("demo",), ("cli",), ("",))

    assert graph["MedSegCNNLib.image.io"] == {"MedSegCNNLib.image.dicom"}
    assert find_cycles(graph) == [
        ["MedSegCNNLib.cli.main", "MedSegCNNLib.demo", "MedSegCNNLib.cli.main"],
        ["MedSegCNNLib.image.dicom", "MedSegCNNLib.image.io", "MedSegCNNLib.image.dicom"],
    ]
    assert layer_violations(graph, layers) == [
        "MedSegCNNLib.demo (layer 4) imports MedSegCNNLib.cli.main (layer 5)",
        "MedSegCNNLib.image.geometry (layer 1) imports MedSegCNNLib.inference (layer 2)",
        "MedSegCNNLib.inference (layer 2) imports MedSegCNNLib.training.trainer (layer 3)",
    ]
    allowed = {("MedSegCNNLib.training.validation", "MedSegCNNLib.inference")}
    assert inference_training_violations(graph, allowed) == [
        "MedSegCNNLib.inference imports MedSegCNNLib.training.trainer"
    ]
    assert command_line_imports(graph, ("MedSegCNNLib.cli",)) == ["MedSegCNNLib.demo imports MedSegCNNLib.cli.main"]

    exempt = {("MedSegCNNLib.demo", "MedSegCNNLib.cli.main")}
    assert command_line_imports(graph, ("MedSegCNNLib.cli",), exempt) == []
    assert len(find_cycles(graph, exempt)) == 1
    assert "MedSegCNNLib.errors: component 'errors' has no layer" in layer_violations(graph, layers[1:])
