"""Validating each raw item against the requested type, with a policy for invalid ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from ._align import Aligner
from ._exceptions import ItemValidationError
from ._quote import GROUNDING, Grounding

__all__ = ["InvalidItem", "ItemValidator", "OnInvalid"]

T = TypeVar("T")

#: What to do with an item that fails validation: raise, or skip it and keep going.
OnInvalid = Literal["raise", "skip"]


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An item that was skipped: its position in the answer, what the model sent, and why."""

    index: int
    raw: Any
    error: ValidationError


class ItemValidator(Generic[T]):
    """Validates raw items in answer order; invalid ones raise or are recorded in `skipped`."""

    __slots__ = ("_adapter", "_context", "error", "grounding", "index", "on_invalid", "skipped")

    def __init__(
        self,
        adapter: TypeAdapter[T],
        *,
        context: Any = None,
        on_invalid: OnInvalid = "raise",
        aligner: Aligner | None = None,
    ) -> None:
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', not {on_invalid!r}")
        # The adapter, not its bound `validate_python`: one object fewer per stream to collect.
        self._adapter = adapter
        self._context = context
        self.on_invalid: OnInvalid = on_invalid
        #: Items dropped under `on_invalid="skip"`, in order.
        self.skipped: list[InvalidItem] = []
        #: Position in the answer's list of the next raw item.
        self.index = 0
        #: What stopped validation: the `ItemValidationError` under `on_invalid="raise"`, or
        #: the exception a validator raised after valid items of the same batch.
        self.error: Exception | None = None
        #: How the `Quote` fields of items find their words in the text: None when the
        #: extraction has no text to ground them in (or its type has no Quote).
        self.grounding: Grounding | None = (
            None if aligner is None else Grounding(aligner, lo=aligner.read_from)
        )

    def validate(self, raw_items: list[Any]) -> list[T]:
        """Validate a batch of raw items; return the valid ones, in order.

        Under `on_invalid="raise"` an invalid item stops the batch: the valid items before it
        are returned and `error` is set to the `ItemValidationError`, for the caller to raise
        once those items were delivered. Any other exception a validator raises stops it the
        same way (it is raised at once if no item came before it in the batch).
        """
        grounding = self.grounding
        if grounding is None:
            return self._validate(raw_items, None)
        # The grounding is in a context variable for the batch only (set and reset around
        # it, with no await between: nothing else on the loop sees it).
        token = GROUNDING.set(grounding)
        try:
            return self._validate(raw_items, grounding)
        finally:
            GROUNDING.reset(token)

    def _validate(self, raw_items: list[Any], grounding: Grounding | None) -> list[T]:
        """The loop of `validate`; with a grounding, each item claims its Quotes' spans only
        if it is valid."""
        out: list[T] = []
        validate = self._adapter.validate_python
        context = self._context
        for raw in raw_items:
            index = self.index
            self.index = index + 1
            mark = 0 if grounding is None else grounding.begin()
            try:
                item = validate(raw, context=context)
                if grounding is not None:
                    grounding.commit(item, mark)
                out.append(item)
            except ValidationError as exc:
                if grounding is not None:
                    grounding.rollback(mark)
                if self.on_invalid == "skip":
                    self.skipped.append(InvalidItem(index, raw, exc))
                    continue
                self.error = _invalid(index, raw, exc)
                break
            except Exception as exc:  # the user's validator failed: its error, after the items
                if grounding is not None:
                    grounding.rollback(mark)
                if not out:
                    raise
                self.error = exc
                break
        return out


def _invalid(index: int, raw: Any, exc: ValidationError) -> ItemValidationError:
    return ItemValidationError(
        f"item {index} is not a valid {exc.title}: {_summary(exc)}",
        index=index,
        raw=raw,
        errors=exc.errors(include_url=False),
    )


def _summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(item)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
