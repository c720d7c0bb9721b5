"""The one base class of every spec model.

Every model in `enova.spec.models` derives from `StrictModel`: unknown keys are errors (a typo
in a user's file must not be silently ignored), instances are immutable, and values are not
coerced across types (`replicas: "2"` is an error rather than a silent conversion). Every field
must carry a `description`, checked when the class is defined, so that the JSON Schema that
`enova.spec.schema` emits is useful in editors.
"""

from __future__ import annotations

from typing import Any

import pydantic


class StrictModel(pydantic.BaseModel):
    """Base of spec models: extra keys forbidden, frozen, strict types, described fields."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        undescribed = [name for name, field in cls.model_fields.items() if not field.description]
        if undescribed:
            raise TypeError(f"{cls.__name__}: every field needs a description; missing on {', '.join(undescribed)}")
