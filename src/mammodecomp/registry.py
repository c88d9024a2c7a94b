"""Decorator-filled registries (the timm ``register_model`` pattern).

>>> reg = Registry("toy")
>>> @reg.register("double")
... def double(x):
...     return 2 * x
>>> reg.get("double")(3)
6
>>> sorted(reg)
['double']
"""
from __future__ import annotations

from typing import Callable, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


class Registry:
    """A name -> object mapping filled by a decorator on import."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str):
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise InputError(f"unknown {self.kind} '{name}'; expected one of: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
