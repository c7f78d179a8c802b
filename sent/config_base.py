"""What every config section shares: frozen, no unknown keys, no NaN or infinity, no YAML
boolean where a number is meant. Kept apart from the schema (`sent.config`) so that a section
declared elsewhere (`sent.loss_config`, without torch) is checked the same way.
"""

from __future__ import annotations

import types
import typing
import warnings
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from sent.errors import SentError


class ConfigError(SentError, ValueError):
    """A configuration file or override that does not validate; the message names file and key."""


FOLLOW: Any = None
"""The default of a key that follows another section's (`sent.config.FOLLOWS`): no value until
`sent.config.SentConfig` fills it in. Typed ``Any`` so that the key keeps its real type (a
loaded config always holds a value); never validated."""


class Section(BaseModel):
    """A config section: frozen, strict about keys, finite numbers only."""

    # no NaN or infinity anywhere: lr=.inf or correct_score=.nan would only fail mid-run
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    RENAMED: ClassVar[dict[str, str]] = {}
    """Old key -> its new name. The old one is still read, with a warning; cache keys keep the
    old name (`digest_dump`), so a rename recomputes nothing."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if not cls.RENAMED or not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in cls.RENAMED.items():
            if old in data:
                if new in data:
                    raise ValueError(f"{old!r} is the old name of {new!r}: give only {new!r}")
                warnings.warn(f"config key {old!r} is now {new!r}; the old name will go", FutureWarning, stacklevel=2)
                data[new] = data.pop(old)
        return data

    @model_validator(mode="before")
    @classmethod
    def _null_means_follow(cls, data: Any) -> Any:
        """An explicit null for a key that follows another section (`sent.config.FOLLOWS`: typed
        without None, default None) leaves it out, as the docs say it may be."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            k: v
            for k, v in data.items()
            if not (
                v is None
                and k in fields
                and fields[k].default is FOLLOW
                and type(None) not in member_types(fields[k].annotation)
            )
        }

    def digest_dump(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The section as JSON for a cache key: renamed keys under their old names."""
        dump = self.model_dump(mode="json", exclude=exclude)
        for old, new in self.RENAMED.items():
            if new in dump:
                dump[old] = dump.pop(new)
        return dump

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's ``true`` is not a number: ``sampling.n: true`` would otherwise be 1."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if bool not in member_types(annotation) and annotation is not Any:
                raise ValueError(f"expected {type_name(annotation)}, got the boolean {str(value).lower()}")
        return value


def member_types(annotation: Any) -> set[Any]:
    """The types an annotation admits (``int | None`` -> {int, None}; a ``Literal``'s values' types)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {type(v) for v in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(member_types(a) for a in typing.get_args(annotation)))
    return {origin or annotation}


def type_name(annotation: Any) -> str:
    """``int | None`` -> "int"; ``float | int`` -> "float or int"."""
    names = sorted(getattr(t, "__name__", str(t)) for t in member_types(annotation) if t is not type(None))
    return " or ".join(names) or "a value"
