"""The package layers point down only, and no module imports another module's private names.

Each top-level package of `tuneforge` sits in one layer; a module may import its own package and
any package in a lower layer, never a higher one, nor a sibling in its own layer. Every import
counts, function-level (lazy) ones included. See ARCHITECTURE.md for what each layer holds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tuneforge"

# Highest first. Packages in one tuple are siblings: neither may import the other.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),  # the command line: starts the app and workers, calls services
    ("app",),  # composes the web app from api/ and ui/
    ("ui",),  # the dashboard: uses api/'s dependencies and error envelope
    ("api",),  # the OpenAI-compatible HTTP API: thin routers
    ("jobs",),  # the job processes: worker, runner, reporter, queue
    ("services",),  # the rules behind every endpoint (no FastAPI, no torch)
    ("domain",),  # job states, events, model names
    ("integrations",),  # W&B, webhooks, e-mail, the outbox
    ("store", "protocol"),  # SQL tables and blobs | OpenAI wire shapes
    ("inference", "safety", "export"),  # serving engine | data screening | model export (tar)
    ("catalog", "model_sources"),  # which base models exist and where | checking a new source
    ("gguf",),  # reading GGUF files, de-quantising into an HF folder
    ("training",),  # the training engine: spec + reporter in, checkpoints out
    ("hardware",),  # what this machine computes fast (bf16 probe), for both engines
    ("pricing",),  # the one cost rule
    ("config", "logs"),  # Settings | logging setup
    ("errors", "ids"),  # domain errors | ids and clocks
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tuneforge" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names imported from it) for every import in `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(p.relative_to(SRC.parent).with_suffix("").parts), p)
        for p in sorted(SRC.rglob("*.py"))
        if "migrations" not in p.parts
    ]


def upward_imports() -> list[str]:
    problems = []
    for module, path in _modules():
        own = _package(module)
        if own is None:  # tuneforge/__init__.py
            continue
        for line, target, names in _imports(path):
            if target == "tuneforge":  # `from tuneforge import ui`: the names are packages
                targets = [f"tuneforge.{n}" for n in names]
            else:
                targets = [target]
            for t in targets:
                pkg = _package(t)
                if pkg is None or pkg == own:
                    continue
                if pkg not in RANK or own not in RANK:
                    problems.append(
                        f"{path.relative_to(SRC.parent)}:{line}: {own} -> {pkg}: "
                        "package not placed in a layer (add it to LAYERS)"
                    )
                elif RANK[pkg] <= RANK[own]:
                    kind = "a sibling" if RANK[pkg] == RANK[own] else "a higher layer"
                    problems.append(f"{path.relative_to(SRC.parent)}:{line}: {own} imports {pkg}, {kind}")
    return problems


def private_imports() -> list[str]:
    problems = []
    for module, path in _modules():
        for line, target, names in _imports(path):
            if not target.startswith("tuneforge") or target == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
            if private:
                problems.append(
                    f"{path.relative_to(SRC.parent)}:{line}: imports private "
                    f"{', '.join(private)} from {target}"
                )
    return problems


def test_every_package_is_placed_in_a_layer() -> None:
    packages = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert packages == set(RANK), f"unplaced: {packages - set(RANK)}, gone: {set(RANK) - packages}"


def test_layers_only_point_down() -> None:
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_module_imports_another_modules_private_names() -> None:
    problems = private_imports()
    assert not problems, "private imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from tuneforge.api.deps import Auth\n", "services imports api, a higher layer"),
        ("from tuneforge import ui\n", "services imports ui, a higher layer"),
    ],
)
def test_the_check_sees_an_upward_import(tmp_path, monkeypatch, source, expected) -> None:
    # A self-test on a fake tree, so the real check is known to bite.
    fake = tmp_path / "tuneforge"
    (fake / "services").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "services" / "__init__.py").write_text("")
    (fake / "services" / "x.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "SRC", fake, raising=False)
    globals()["SRC"], saved = fake, SRC
    try:
        assert any(expected in p for p in upward_imports())
    finally:
        globals()["SRC"] = saved
