"""Command-line flags generated from (nested) options dataclasses: one place for defaults, help and checks.

Each field becomes --field-name (bools get --no-...). A field whose type is itself a dataclass contributes its
own fields, with the flag prefix in its metadata ("prefix": "lora-" gives --lora-rank); a field's metadata may
name its flag outright ("flag": "backbone") and how to read it ("parse": a function of the string). The
dataclasses check their values in __post_init__, so a bad flag fails at once with the dataclass's message.

transformers.HfArgumentParser reads flat dataclasses only; the grader's configs nest (TrainConfig holds a
ModelConfig, which holds a BackboneConfig and LoraOptions), as checkpoints store them.
"""

import argparse
import dataclasses
import types
import typing


def parse_options(cls, argv: list[str] | None = None, description: str | None = None, positional: str | None = None):
    """Parse argv into an instance of dataclass `cls`. `positional` names a list[str] field filled from the
    remaining positional arguments."""
    parser = argparse.ArgumentParser(description=description or cls.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_fields(parser, cls, "", (), positional)
    values = vars(parser.parse_args(argv))
    try:
        return _build(cls, (), values)
    except ValueError as error:
        parser.error(str(error))


def _add_fields(parser: argparse.ArgumentParser, cls, prefix: str, path: tuple[str, ...], positional: str | None):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _plain(hints[f.name])
        dest = ".".join((*path, f.name))
        if dataclasses.is_dataclass(kind):
            _add_fields(parser, kind, prefix + f.metadata.get("prefix", ""), (*path, f.name), None)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", " ")
        flag = "--" + f.metadata.get("flag", prefix + f.name.replace("_", "-"))
        if f.name == positional:
            parser.add_argument(dest, nargs="+", help=help_text)
        elif kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=dest, type=f.metadata.get("parse", kind), default=default, help=help_text,
                                metavar=f.name.upper())


def _build(cls, path: tuple[str, ...], values: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        kind = _plain(hints[f.name])
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = _build(kind, (*path, f.name), values)
        else:
            kwargs[f.name] = values[".".join((*path, f.name))]
    return cls(**kwargs)


def _plain(kind):
    """X for `X | None`."""
    if isinstance(kind, types.UnionType):
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def comma_list(text: str) -> list[str]:
    """'total,accuracy' -> ['total', 'accuracy']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def comma_ints(text: str) -> list[int]:
    """'0,1' -> [0, 1] (fold numbers)."""
    return [int(part) for part in comma_list(text)]
