"""Presentation context negotiation that honours the sender's transfer syntax preference.

pynetdicom, as acceptor, takes the first transfer syntax in *its own* list that the requestor
proposed, so a modality proposing "JPEG 2000 lossless, then Explicit VR LE" for a context gets
whatever we listed first and may decompress to send it. We store what we receive unchanged, so
the sender's first choice (usually what the file already is) is the one to take: for each
proposed context our supported syntaxes are reordered to the requestor's order before
pynetdicom's own negotiation (roles, rejections) runs on it.
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom import acse
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

_installed = False


def copy_context(cx: PresentationContext, transfer_syntax: list[UID]) -> PresentationContext:
    """``cx`` with its own ``transfer_syntax`` list, without pynetdicom's setters: its UIDs
    were validated when it was built or decoded, and validating them again on every copy was
    milliseconds of each association's set-up. Everything else a context holds is immutable."""
    twin = PresentationContext.__new__(PresentationContext)
    twin.__dict__.update(cx.__dict__)
    twin._transfer_syntax = transfer_syntax
    return twin


def _in_requestor_order(rq: PresentationContext, ac: PresentationContext) -> PresentationContext:
    ours = set(ac.transfer_syntax)
    preferred = [ts for ts in rq.transfer_syntax if ts in ours]
    # Only what matters for this proposal; with none in common, one of ours makes pynetdicom
    # reject for the right reason.
    return copy_context(ac, preferred or ac.transfer_syntax[:1])


def negotiate_in_requestor_order(rq_contexts, ac_contexts, roles=None):  # type: ignore[no-untyped-def]
    """Drop-in for pynetdicom's ``negotiate_as_acceptor`` (same arguments and result)."""
    supported = {cx.abstract_syntax: cx for cx in ac_contexts}
    results: list[PresentationContext] = []
    role_items = {}
    for rq in rq_contexts:
        ac = supported.get(rq.abstract_syntax)
        mine = [_in_requestor_order(rq, ac)] if ac is not None else []
        result, items = negotiate_as_acceptor([rq], mine, roles)
        results.extend(result)
        for item in items:
            role_items.setdefault(item.sop_class_uid, item)
    return results, list(role_items.values())


def install() -> None:
    """Use :func:`negotiate_in_requestor_order` for every association this process accepts."""
    global _installed
    if not _installed:
        acse.negotiate_as_acceptor = negotiate_in_requestor_order  # type: ignore[attr-defined]
        _installed = True
