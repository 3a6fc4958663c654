"""Name -> constructor registries (optimizers, algorithms, models, datasets, partitioners).

The registered classes carry their own metadata (an algorithm's ``label``, ``centralized`` and
``family``, an optimizer's ``label`` and ``sam_family``); dfl.methods reads it for labels, so no
other module keeps a list of names."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from topologies.errors import unknown_name

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects; unknown names raise ConfigError with the closest match.

    >>> r = Registry("colour"); _ = r.register("red")(1)
    >>> r["red"]
    1
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise AssertionError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(unknown_name(self.kind, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
