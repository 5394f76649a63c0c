"""Which domain errors a function can raise, read from the code that raises them.

``errors_of(function)`` reads the function's source (``ast``) and collects:

- every ``app.core.errors.AppError`` subclass it raises or builds (``raise EmailTakenError()``,
  ``raise await _fail(..., InvalidMfaCodeError(), ...)``, ``return JwksUnavailableError()``);
- the errors of every function of this app it calls, recursively: a module's function (``service.login``,
  ``_resolve``), a method of ``self`` or of a parameter whose annotation names an app class
  (``data.one`` with ``data: Data``);
- minus what a ``try`` around the call catches (``except InvalidCredentialsError: raise InvalidGrant()``),
  unless the handler re-raises it;
- plus what ``@raises(...)`` declares: error classes or functions the analysis cannot see (a call through
  ``request.app.state``, a callback passed as an argument).

Only this app's functions are read (``app.*`` modules); third-party code raises no domain errors. The analysis
over-approximates (a branch that never runs in practice still counts), never the other way round: the drift
test (tests/conftest.py) fails when an answer's code is not in the operation's document.
app/core/openapi.py walks each route's endpoint and its dependency tree (FastAPI's ``Dependant``) with it.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from app.core.errors import AppError

F = TypeVar("F", bound=Callable[..., Any])
Raised = frozenset[type[AppError]]
Declared = type[AppError] | Callable[..., Any]

PACKAGES: tuple[str, ...] = ("app",)  # whose code is read
_RAISES = "__raises__"


def raises(*declared: Declared) -> Callable[[F], F]:
    """Declare errors the analysis cannot see: error classes, or functions whose errors count as this one's."""

    def mark(function: F) -> F:
        setattr(function, _RAISES, (*getattr(function, _RAISES, ()), *declared))
        return function

    return mark


def _is_error_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, AppError)


def _in_app(value: Any) -> bool:
    module = getattr(value, "__module__", None) or ""
    return any(module == package or module.startswith(package + ".") for package in PACKAGES)


def _target(value: Any) -> Any:
    """The function behind a callable: unwrapped decorators, partials, bound methods, callable instances."""
    if isinstance(value, functools.partial):
        return _target(value.func)
    if inspect.ismethod(value):
        return _target(value.__func__)
    if isinstance(value, staticmethod | classmethod):
        return _target(value.__func__)
    if inspect.isfunction(value):
        return inspect.unwrap(value)
    if callable(value) and not isinstance(value, type) and _in_app(type(value)):
        return _target(type(value).__call__)  # a dependency instance (e.g. the bearer scheme)
    return None


def errors_of(value: Any) -> Raised:
    """Every domain error ``value`` (a function, method or callable instance) may raise."""
    function = _target(value)
    if function is None:
        return frozenset()
    return _function_errors(function)


_cache: dict[Any, Raised] = {}


def _function_errors(function: types.FunctionType) -> Raised:
    key = function.__code__
    if key in _cache:
        return _cache[key]
    _cache[key] = frozenset()  # a cycle contributes nothing more than what its first visit finds
    found: set[type[AppError]] = set()
    for item in getattr(function, _RAISES, ()):
        found |= {item} if _is_error_class(item) else errors_of(item)
    if _in_app(function):
        node = _parse(function)
        if node is not None:
            found |= _Analysis(function).block(node.body)
    result = frozenset(found)
    _cache[key] = result
    return result


def _parse(function: types.FunctionType) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a lambda's line, say
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _owner(function: types.FunctionType) -> type | None:
    """The class a method is defined in (from its qualified name), for ``self.x`` / ``cls.x``."""
    parts = function.__qualname__.split(".")
    if len(parts) < 2 or "<locals>" in parts[:-1]:
        return None
    value: Any = inspect.getmodule(function)
    for part in parts[:-1]:
        value = getattr(value, part, None)
    return value if isinstance(value, type) else None


def _annotation_classes(function: types.FunctionType) -> dict[str, tuple[type, ...]]:
    """Parameter name -> the app classes its annotation names (``X``, ``X | None``, ``Annotated[X, ...]``)."""
    try:
        hints = typing.get_type_hints(function, include_extras=False)
    except Exception:  # an annotation only importable under TYPE_CHECKING: no method calls resolved through it
        return {}
    classes: dict[str, tuple[type, ...]] = {}
    for name, hint in hints.items():
        options = [arg for arg in typing.get_args(hint)] if typing.get_args(hint) else [hint]
        found = tuple(option for option in options if isinstance(option, type) and _in_app(option))
        if found:
            classes[name] = found
    return classes


class _Analysis:
    def __init__(self, function: types.FunctionType) -> None:
        self.function = function
        self.globals = function.__globals__
        try:
            self.nonlocals = inspect.getclosurevars(function).nonlocals
        except (TypeError, ValueError):
            self.nonlocals = {}
        self.owner = _owner(function)
        self.params = _annotation_classes(function)

    # --- names -------------------------------------------------------------------------------------------

    def _lookup(self, name: str) -> list[Any]:
        if name in {"self", "cls"} and self.owner is not None:
            return [self.owner]
        if name in self.params:
            return list(self.params[name])
        for scope in (self.nonlocals, self.globals, vars(builtins)):
            if name in scope:
                return [scope[name]]
        return []

    def resolve(self, node: ast.expr) -> list[Any]:
        """What a name or a dotted name refers to; attributes only through modules and classes."""
        if isinstance(node, ast.Name):
            return self._lookup(node.id)
        if isinstance(node, ast.Attribute):
            found = []
            for base in self.resolve(node.value):
                if isinstance(base, types.ModuleType | type):
                    try:
                        found.append(inspect.getattr_static(base, node.attr))
                    except AttributeError:
                        # A class's attribute may come from a base class through a metaclass; a module's
                        # attribute may be a lazily imported submodule.
                        value = getattr(base, node.attr, None)
                        if value is not None:
                            found.append(value)
            return found
        return []

    def _caught(self, handler: ast.ExceptHandler) -> tuple[type[BaseException], ...]:
        if handler.type is None:
            return (BaseException,)
        nodes = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        return tuple(
            value
            for node in nodes
            for value in self.resolve(node)
            if isinstance(value, type) and issubclass(value, BaseException)
        )

    # --- statements and expressions ---------------------------------------------------------------------

    def block(self, statements: Iterable[ast.AST]) -> set[type[AppError]]:
        found: set[type[AppError]] = set()
        for statement in statements:
            found |= self.node(statement)
        return found

    def node(self, node: ast.AST) -> set[type[AppError]]:
        if isinstance(node, ast.Try | ast.TryStar):
            return self._try(node)
        found: set[type[AppError]] = set()
        if isinstance(node, ast.Call):
            found |= self._call(node)  # a call of an app function, or an error built (to be raised)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name | ast.Attribute):
            found |= {value for value in self.resolve(node.exc) if _is_error_class(value)}  # `raise SomeError`
        for child in ast.iter_child_nodes(node):
            found |= self.node(child)
        return found

    def _call(self, node: ast.Call) -> set[type[AppError]]:
        found: set[type[AppError]] = set()
        for value in self.resolve(node.func):
            if _is_error_class(value):
                found.add(value)
            elif (target := _target(value)) is not None:
                found |= _function_errors(target)
        return found

    def _try(self, node: ast.Try | ast.TryStar) -> set[type[AppError]]:
        inside = self.block(node.body)
        found: set[type[AppError]] = set()
        caught: tuple[type[BaseException], ...] = ()
        for handler in node.handlers:
            types_ = self._caught(handler)
            caught += types_
            found |= self.block(handler.body)
            if any(isinstance(n, ast.Raise) and n.exc is None for n in _walk_local(handler.body)):
                found |= {error for error in inside if issubclass(error, types_)}  # `raise`: re-raised as is
        found |= {error for error in inside if not issubclass(error, caught)} if caught else inside
        return found | self.block(node.orelse) | self.block(node.finalbody)


def _walk_local(statements: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """The nodes of a block, not descending into nested functions or classes."""
    for statement in statements:
        yield statement
        if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            yield from _walk_local(ast.iter_child_nodes(statement))
