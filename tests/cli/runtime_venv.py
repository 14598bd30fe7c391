"""A virtual environment holding only tuneforge's runtime dependencies, built in about a second.

Installing torch & co. into a second venv is far too slow for a test, so this one reuses the
distributions already installed beside the test interpreter: it walks tuneforge's requirements
(pyproject.toml `[project].dependencies`, with the extras they name, never `[dev]`) and then
each distribution's Requires-Dist (markers evaluated for this interpreter, no extras unless a
requirement asks for them), and symlinks exactly those distributions' files into a fresh venv's
site-packages. Anything else (openai before it was a runtime dependency, pytest, playwright, …)
is simply not there: `import` fails and `importlib.util.find_spec` says None, as on a user's
machine after `pip install tuneforge`.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def closure(requirements: list[Requirement]) -> dict[str, md.Distribution]:
    """Every installed distribution the requirements need, by canonical name."""
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            continue
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = md.distribution(req.name)  # a missing one raises: the dev venv lacks a runtime dep
        found[name] = dist
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((Requirement(str(sub).split(";")[0]), frozenset(sub.extras)))
    return found


def build(target: Path) -> Path:
    """Create the venv at `target`; return its `tuneforge` console script."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(target), "platbase": str(target)}))
    for dist in closure(runtime_requirements()).values():
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if top == "__pycache__" or (site / top).exists() or not (base / top).exists():
                continue
            (site / top).symlink_to(base / top)
    (site / "tuneforge-src.pth").write_text(str(ROOT / "src") + "\n")
    script = target / "bin" / "tuneforge"
    script.write_text(f"#!{target}/bin/python\nfrom tuneforge.cli import app\napp()\n")
    script.chmod(0o755)
    return script


def env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment for a process of that venv: nothing leaks in through PYTHONPATH."""
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out["PATH"] = f"{venv}/bin:{out.get('PATH', '')}"
    return out | extra
