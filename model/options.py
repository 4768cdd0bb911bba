"""Settings as dataclasses whose fields carry their help, and the one function that turns them into command-line flags.

A settings class declares each field with :func:`option`; :func:`add_options` adds one flag per field to an
``argparse`` parser, with the type, choices, default and help the field declares, so ``--help`` shows what the class
says and nothing is written twice. ``from_args`` builds the settings back from the parsed flags.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
    positional: bool = False,
) -> Any:
    """A dataclass field with its help text and, for the command line, its ``choices``, a ``parse`` function for a
    value written as one string (``--columns text=content``), or ``positional`` for a leading argument."""
    metadata = {"help": " ".join(help.split()), "choices": tuple(choices) if choices else None, "parse": parse, "positional": positional}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_options(parser: argparse.ArgumentParser, cls, defaults: dict | None = None, skip: Sequence[str] = ()) -> None:
    """One flag per field of ``cls`` (``--batch-size`` for ``batch_size``); ``defaults`` overrides the class's."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = (defaults or {}).get(f.name, default)
        parser.add_argument(*_names(f), **_argument(f, hints[f.name], default))


def from_args(cls, args: argparse.Namespace):
    """``cls`` built from the parsed flags: every field the parser has a value for (the others keep their defaults)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def _names(f: dataclasses.Field) -> list[str]:
    return [f.name] if f.metadata.get("positional") else ["--" + f.name.replace("_", "-")]


def _argument(f: dataclasses.Field, hint, default) -> dict:
    meta = f.metadata
    required = default is dataclasses.MISSING
    # argparse expands %(...)s in help, so a literal percent sign is doubled
    text = meta.get("help", "").replace("%", "%%")
    kind, optional = _unwrap_optional(hint)
    spec: dict[str, Any] = {} if meta.get("positional") else {"dest": f.name}
    if meta.get("choices"):
        spec["choices"] = list(meta["choices"])
    if meta.get("parse"):
        spec["type"] = _with_message(meta["parse"])
    elif kind is bool:
        spec["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(kind) is list:
        spec["nargs"] = "+" if required else "*"
        spec["type"] = typing.get_args(kind)[0]
    elif kind in (int, float, str):
        spec["type"] = _or_none(kind) if optional else kind
    else:
        raise TypeError(f"{f.name}: no command-line form for {hint!r}; give the field a parse function")
    if required:
        if not meta.get("positional"):
            spec["required"] = True
        spec["help"] = text
    else:
        spec["default"] = default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        spec["help"] = f"{text} (default: {shown})"
    return spec


def _unwrap_optional(hint) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(hint, False)`` otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def _with_message(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` whose ValueError message reaches the user (argparse would print only "invalid value")."""

    def checked(value: str):
        try:
            return parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return checked


def _or_none(kind: type) -> Callable[[str], Any]:
    def parse(value: str):
        return None if value.strip().lower() in ("", "none") else kind(value)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse
