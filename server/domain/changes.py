"""What a use case changed, for the store to write.

Domain methods mutate their own objects and record each changed object here
(``upsert``) or each removed one (``delete``). The engine hands the collected
changes to the store, which snapshots them into rows at once and commits them
in its next group commit; the caller answers only after that commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: The metadata of a dataclass field that is not stored: an index the aggregate
#: rebuilds on restore (``field(default=None, repr=False, metadata=DERIVED)``).
#: Every other field of a stored object is a column (``server/store/codec.py``).
DERIVED: Mapping[str, bool] = MappingProxyType({"derived": True})


@dataclass(slots=True, frozen=True)
class Deleted:
    obj: object


@dataclass(slots=True)
class Changes:
    items: list[object] = field(default_factory=list)

    def upsert(self, obj: object) -> None:
        self.items.append(obj)

    def delete(self, obj: object) -> None:
        self.items.append(Deleted(obj))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)
