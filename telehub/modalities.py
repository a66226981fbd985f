"""Which of a case's modalities were acquired, as opposed to objects stored beside them."""

from __future__ import annotations

from telehub.db.models import Case

#: Series that are not an acquisition: the report stored as SR, key objects, presentation
#: states, encapsulated documents, registrations, segmentations. Nobody is qualified "for" them,
#: rules do not route on them, and they do not make a study's modality in figures.
NON_IMAGE = frozenset({"SR", "KO", "PR", "DOC", "REG", "SEG"})


def of_case(case: Case) -> set[str]:
    """Every modality code in the case's studies."""
    return {m for s in case.studies for m in s.modalities.split("\\") if m}


def acquired(case: Case) -> set[str]:
    """The case's imaging modalities, without the objects in NON_IMAGE."""
    return of_case(case) - NON_IMAGE
