"""Which environment variables a service reads, found by parsing its settings code.

Settings are read through `shared.settings.Env` (`env.str("NAME", ...)`, `env.int`,
`env.raw`, `env.host_port`, `env.networks`, ...), helpers that take the name as their
second argument (`_listen(env, "NGINX_HTTPS_LISTEN", "443")`), `environ.get("NAME")`,
and helpers that read fixed names themselves (`env.broker()` reads AMQP_URL and
AMQP_EXCHANGE, `load_bind(environ, ...)` reads METRICS_BIND). So: every call whose first
string argument (after at most one leading name such as `env`) looks like a setting name
counts, and calls to functions of the project's modules that the file imports are
followed into those functions' bodies.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import TypeGuard

ROOT = Path(__file__).resolve().parents[2]
_PROJECT_PACKAGES = ("shared", "services", "trackctl")


def _is_setting_name(value: object) -> TypeGuard[str]:
    if not isinstance(value, str) or "_" not in value:
        return False
    parts = value.split("_")
    return all(part.isupper() or part.isdigit() for part in parts if part) and \
        value[0].isalpha() and value == value.upper()


def _module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.Module) -> list[Path]:
    paths = []
    for node in ast.walk(tree):
        names: Iterable[str] = ()
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] in _PROJECT_PACKAGES and (path := _module_path(name)):
                paths.append(path)
    return paths


def _library(path: Path) -> dict[str, list[ast.AST]]:
    """Functions and methods of every project module `path` imports, transitively."""
    library: dict[str, list[ast.AST]] = {}
    pending, seen = [path], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        tree = ast.parse(current.read_text(), filename=str(current))
        if current != path:
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    library.setdefault(node.name, []).append(node)
        pending.extend(_imported_modules(tree))
    return library


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _names_in(node: ast.AST, library: dict[str, list[ast.AST]], followed: set[int]) -> set[str]:
    names: set[str] = set()
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        for position, arg in enumerate(call.args[:2]):
            if isinstance(arg, ast.Constant):
                if _is_setting_name(arg.value):
                    names.add(arg.value)
                break
            if position == 0 and isinstance(arg, (ast.Name, ast.Attribute)):
                continue  # `_listen(env, "NAME", ...)`: the name comes second
            break
        for function in library.get(_callee(call) or "", ()):
            if id(function) not in followed:
                followed.add(id(function))
                names |= _names_in(function, library, followed)
    return names


def settings_read_by(path: Path) -> set[str]:
    """Every environment variable the code in `path` (and what it calls) reads."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return _names_in(tree, _library(path), set())


def service_settings(service: str) -> set[str]:
    """What `python -m services.<service>` reads: its settings module, and what that calls."""
    return settings_read_by(ROOT / "services" / service / "settings.py")
