"""Command-line flags generated from an options dataclass: one place for defaults and help."""

import argparse
import dataclasses
import types
import typing


def parse_options(cls, argv: list[str] | None = None, description: str | None = None, positional: str | None = None):
    """Parse argv into an instance of dataclass `cls`: each field becomes --field-name (bools get --no-...).
    `positional` names a list[str] field filled from the remaining positional arguments."""
    parser = argparse.ArgumentParser(description=description or cls.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # X | None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", " ")
        if f.name == positional:
            parser.add_argument(f.name, nargs="+", help=help_text)
        elif kind is bool:
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
        else:
            required = default == "" and f.metadata.get("required", False)
            parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, required=required,
                                help=help_text)
    return cls(**vars(parser.parse_args(argv)))
