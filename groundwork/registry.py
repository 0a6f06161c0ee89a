"""One name -> one factory with checked options, timm-style: the line extractors and the learned
scorers are two instances of ``Registry``.

An entry is an info record: a subclass of ``Entry`` (its fields are keyword-only, so a subclass
adds its own after them); ``create(name, weights=..., device=..., **options)`` checks the options
against the defaults (unknown names: TypeError; a value of another type than its default:
ValueError; an int where a float is expected is a float; a ``None`` default takes a value of any
type) and the entry's own ``check``, then calls the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


@dataclass(frozen=True, kw_only=True)
class Entry:
    """What every registered entry holds; a registry's own info record subclasses it."""

    name: str
    factory: Callable[..., Any]
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None  # raises ValueError on bad option values


InfoT = TypeVar("InfoT", bound=Entry)


class UnknownNameError(ValueError):
    """A name nothing registered."""


class Registry(Generic[InfoT]):
    """Entries of one kind (``noun``: how messages name it, e.g. "extractor")."""

    def __init__(
        self,
        noun: str,
        info: Callable[..., InfoT],
        *,
        unknown: type[ValueError] = UnknownNameError,
        discover: Callable[[], None] | None = None,
    ) -> None:
        """``info(name=, factory=, **fields)`` makes an entry; ``discover()`` (settable later, by the
        package whose modules register on import) imports them: called before listing, and when a
        name is not found."""
        self.noun, self._info, self._unknown, self.discover = noun, info, unknown, discover
        self._entries: dict[str, InfoT] = {}

    def register(self, name: str, **fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register ``factory`` under ``name`` with the info ``fields``."""

        def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.noun} {name!r} registered twice")
            fields["defaults"] = dict(fields.get("defaults") or {})
            self._entries[name] = self._info(name=name, factory=factory, **fields)
            return factory

        return wrap

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an entry a test or a plugin registered for a while)."""
        del self._entries[name]

    def _found(self) -> dict[str, InfoT]:
        if self.discover is not None:
            self.discover()
        return self._entries

    def available(self, where: Callable[[InfoT], bool] | None = None) -> list[str]:
        """Every registered name (those ``where`` accepts), sorted."""
        return sorted(n for n, e in self._found().items() if where is None or where(e))

    def info(self, name: str) -> InfoT:
        entry = self._entries.get(name) or self._found().get(name)
        if entry is None:
            raise self._unknown(f"unknown {self.noun} {name!r}; available: {', '.join(self.available())}")
        return entry

    def check_options(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` merged over the defaults, after checking names, types and values (no weights
        are loaded)."""
        entry = self.info(name)
        unknown = set(options) - set(entry.defaults)
        if unknown:
            raise TypeError(
                f"{self.noun} {name!r} has no option(s) {sorted(unknown)}; known: {sorted(entry.defaults)}"
            )
        merged = dict(entry.defaults)
        for key, value in options.items():
            default = entry.defaults[key]
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if default is not None and type(value) is not type(default):
                raise ValueError(
                    f"{self.noun} {name!r}: option {key} must be {type(default).__name__}, got {value!r}"
                )
            merged[key] = value
        if entry.check is not None:
            try:
                entry.check(merged)
            except ValueError as exc:
                raise ValueError(f"{self.noun} {name!r}: {exc}") from None
        return merged

    def create(self, name: str, weights: str | None = None, device: str = "cpu", **options: Any) -> Any:
        """Build ``name``; unknown or ill-typed options are an error, not silently ignored."""
        merged = self.check_options(name, options)
        return self.info(name).factory(weights=weights, device=device, **merged)


__all__ = ["Entry", "Registry", "UnknownNameError"]
