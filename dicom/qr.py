"""Query/Retrieve SCP: C-FIND, C-MOVE and C-GET over the index and the object store.

(Stub: filled in by the query/retrieve work.)
"""

from __future__ import annotations

from collections.abc import Callable

from pynetdicom import AE, evt

from telehub.facilities import FacilityDirectory
from telehub.services import Services


class QueryRetrieve:
    """Handlers for the Q/R services of one running SCP."""

    def __init__(self, services: Services, directory: FacilityDirectory) -> None:
        self.services = services
        self.directory = directory

    @staticmethod
    def add_contexts(ae: AE) -> None:
        """Add the Q/R presentation contexts (SCP role) to ``ae``."""

    def handlers(self) -> list[tuple[evt.EventType, Callable[..., object]]]:
        return []
