"""The layers of DESIGN.md hold: model -> chain -> backends -> runtime -> surfaces, and a
module imports only from its own layer or the layers before it (checked on the source, every
import, those made only for type checking included)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

MODEL, CHAIN, BACKENDS, RUNTIME, SURFACES = range(5)
NAMES = ["model", "chain", "backends", "runtime", "surfaces"]

#: Module (or package prefix) -> layer; the longest matching prefix wins.
LAYERS = {
    # model: the job, its status and options, errors, the codec, aliases
    "workhorse.job": MODEL, "workhorse.context": MODEL, "workhorse.status": MODEL,
    "workhorse.options": MODEL, "workhorse.errors": MODEL, "workhorse.codec": MODEL,
    "workhorse.types": MODEL, "workhorse.backoff": MODEL, "workhorse.typed_args": MODEL,
    "workhorse.registry": MODEL, "workhorse.queues": MODEL, "workhorse.tasks": MODEL,
    "workhorse.jsonlog": MODEL, "workhorse.loop_calls": MODEL,
    # chain: composing handlers, built-in middleware
    "workhorse.chain": CHAIN, "workhorse.middleware": CHAIN,
    # backends: stores of our own, and sources (other people's streams)
    "workhorse.backends": BACKENDS, "workhorse.sources": BACKENDS,
    # runtime: the App, workers, policy, results, telemetry's recording
    "workhorse.app": RUNTIME, "workhorse.worker": RUNTIME, "workhorse.local": RUNTIME,
    "workhorse.runner": RUNTIME, "workhorse.consume": RUNTIME, "workhorse.hooks": RUNTIME,
    "workhorse.reports": RUNTIME, "workhorse.retry": RUNTIME, "workhorse.producer": RUNTIME,
    "workhorse.ref": RUNTIME, "workhorse.results": RUNTIME, "workhorse.schedule": RUNTIME,
    "workhorse.settler": RUNTIME, "workhorse.lease_keeper": RUNTIME,
    "workhorse.concurrent": RUNTIME, "workhorse.admin": RUNTIME,
    "workhorse.telemetry": RUNTIME,
    # surfaces: what people and other programs talk to
    "workhorse": SURFACES, "workhorse.__main__": SURFACES, "workhorse.cli": SURFACES,
    "workhorse.admin_cli": SURFACES, "workhorse.admin_moves_cli": SURFACES,
    "workhorse.demo": SURFACES, "workhorse.health": SURFACES, "workhorse.web": SURFACES,
    "workhorse.grpc": SURFACES, "workhorse.telemetry.prometheus": SURFACES,
    "workhorse.tokens": SURFACES,
}


def layer_of(module: str) -> int:
    best = max((prefix for prefix in LAYERS
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The workhorse modules ``path`` imports (``from workhorse import codec`` names
    ``workhorse.codec``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "workhorse" or node.module.startswith("workhorse.")):
            if node.module == "workhorse":
                found.update(f"workhorse.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names
                         if alias.name.startswith("workhorse"))
    return found


def sources() -> list[Path]:
    return [path for path in sorted((SRC / "workhorse").rglob("*.py"))
            if "_proto" not in path.parts]


@pytest.mark.parametrize("path", sources(), ids=lambda p: module_name(p))
def test_a_module_imports_only_from_its_layer_or_those_before(path):
    module = module_name(path)
    own = layer_of(module)
    wrong = sorted(f"{name} ({NAMES[layer_of(name)]})" for name in imports(path)
                   if layer_of(name) > own and name != "workhorse.__version__")
    assert not wrong, f"{module} ({NAMES[own]}) imports from a later layer: {wrong}"
