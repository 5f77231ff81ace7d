"""Settings declared once: a `Setting` per environment variable, a `Program` per reader.

A `Setting` is the one place that says what a variable is called, how its text is
parsed (a parser from `shared.settings.parsers`), what it is when unset, and what it
is for. Reading, the error messages, the documentation's default column and the
deploy tests' list of known variables all come from it. A `Program` (each service,
trackctl) lists the settings it reads; `Env(environ, program)` refuses to read one it
does not list, so that list stays the truth about which programs use a variable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.errors import SettingsError

T = TypeVar("T")
# A setting of a value is a setting of any wider type: `Setting` only produces values.
T_co = TypeVar("T_co", covariant=True)

Parser = Callable[[str], T]


class Invalid(Exception):
    """A parser's complaint about a text, without the variable's name: the `Setting`
    adds it, so every message starts with the name whatever parser is used."""


def optional(parser: Parser[T]) -> Parser[T | None]:
    """`None` for an empty text (an unset variable), else `parser`'s value."""

    def parse(text: str) -> T | None:
        return parser(text) if text else None

    return parse


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Setting(Generic[T_co]):
    """One environment variable.

    `default` is the text used when the variable is unset or blank (parsed like a
    value, so a default is as valid as any value), `REQUIRED`, or a function
    returning that text when it is only known at run time (then `shown` says what it
    is). An empty default means "none": the parser says what none is (`None`, `()`).
    `shown` overrides how the documentation writes the default.
    """

    name: str
    parser: Callable[[str], T_co] = dataclasses.field(repr=False)
    default: str | _Required | Callable[[], str]
    help: str
    shown: str | None = None
    # Blank means "unset" (the default) unless the parser gives blank a meaning of
    # its own (METRICS_BIND: empty turns the metrics off).
    blank_is_unset: bool = True
    # Shows a value safely (URLs: the password masked); set for variables that may
    # hold a secret, whose raw text must never reach an error message.
    redact: Callable[[str], str] | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if callable(self.default) and self.shown is None:
            raise ValueError(f"{self.name}: a computed default needs `shown`")

    def read(self, environ: Mapping[str, str]) -> T_co:
        """The variable's value in `environ`, parsed; a `SettingsError` naming it if not."""
        raw = environ.get(self.name)
        if raw is not None and (raw.strip() or not self.blank_is_unset):
            return self.parse(raw)
        if isinstance(self.default, _Required):
            raise SettingsError(f"{self.name} is required but not set")
        return self.parse(self.default() if callable(self.default) else self.default)

    def parse(self, text: str) -> T_co:
        """`text` parsed as this variable's value (stripped first)."""
        try:
            return self.parser(text.strip())
        except Invalid as exc:
            raise self.invalid(str(exc), text) from None

    def invalid(self, detail: str, text: str | None = None) -> SettingsError:
        """The error for a value of this variable: `NAME <detail>`. For a secret
        variable, a detail that would show the raw `text` is replaced."""
        if (self.redact is not None and text and text.strip() in detail
                and self.redact(text.strip()) != text.strip()):
            detail = "is malformed (its value is not shown: it holds a secret)"
        return SettingsError(f"{self.name} {detail}")

    def optional(self) -> Setting[T_co | None]:
        """The same variable, `None` when unset: for a program that can do without it."""
        return Setting(self.name, optional(self.parser), "", self.help, redact=self.redact)

    @property
    def shown_default(self) -> str:
        """The default as the documentation's tables write it."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, _Required):
            return "(required)"
        return f"`{self.default}`" if self.default else "(none)"


@dataclass(frozen=True)
class Program:
    """A program (a service, trackctl) and every setting it reads."""

    name: str
    settings: tuple[Setting[Any], ...]

    def __post_init__(self) -> None:
        names = [setting.name for setting in self.settings]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{self.name} declares {', '.join(repeated)} more than once")

    @property
    def names(self) -> frozenset[str]:
        return frozenset(setting.name for setting in self.settings)

    def __getitem__(self, name: str) -> Setting[Any]:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise KeyError(f"{self.name} declares no {name}")


class Env:
    """Reads declared settings from an environment mapping: `env[SETTING]`.

    With a program, a setting the program does not declare is a `LookupError`: a
    mistake in the code, found by the first test that runs it.
    """

    def __init__(self, environ: Mapping[str, str], program: Program | None = None) -> None:
        self._environ = environ
        self._program = program

    def __getitem__(self, setting: Setting[T]) -> T:
        if self._program is not None and setting.name not in self._program.names:
            raise LookupError(f"{self._program.name} reads {setting.name} but does not "
                              "declare it")
        return setting.read(self._environ)
