"""Routing rules: does a rule match a case? Pure functions over a case's routing facts, so the
routing task, the admin preview and the tests all judge a rule the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from telehub.db.models import RoutingRule


@dataclass(frozen=True)
class CaseFacts:
    """What routing looks at: the attributes a rule can match, normalised once."""

    kind: str
    priority: str
    origin_facility_id: int
    origin_tier: str
    modalities: frozenset[str] = field(default_factory=frozenset)
    body_part: str = ""
    subspecialty: str = ""

    @classmethod
    def of(
        cls,
        *,
        kind: str,
        priority: str,
        origin_facility_id: int,
        origin_tier: str,
        modalities: Iterable[str] = (),
        body_part: str = "",
        subspecialty: str = "",
    ) -> CaseFacts:
        return cls(
            kind=kind.strip().lower(),
            priority=priority.strip().lower(),
            origin_facility_id=origin_facility_id,
            origin_tier=origin_tier.strip().lower(),
            modalities=frozenset(m.strip().upper() for m in modalities if m and m.strip()),
            body_part=body_part.strip().upper(),
            subspecialty=subspecialty.strip().lower(),
        )


def _upper(values: Sequence[str]) -> set[str]:
    return {str(v).strip().upper() for v in values}


def _lower(values: Sequence[str]) -> set[str]:
    return {str(v).strip().lower() for v in values}


def mismatch(rule: RoutingRule, facts: CaseFacts) -> str | None:
    """Why ``rule`` does not match (the first failing criterion), or None when it matches.

    Each criterion is a list; an empty list matches anything. Modalities match when the case
    has any of them; codes and body parts compare case-insensitively."""
    if rule.kinds and facts.kind not in _lower(rule.kinds):
        return f"kind {facts.kind} not in {sorted(rule.kinds)}"
    if rule.modalities and not (facts.modalities & _upper(rule.modalities)):
        return f"modalities {sorted(facts.modalities)} not in {sorted(rule.modalities)}"
    if rule.body_parts and facts.body_part not in _upper(rule.body_parts):
        return f"body part {facts.body_part or '(none)'} not in {sorted(rule.body_parts)}"
    if rule.subspecialties and facts.subspecialty not in _lower(rule.subspecialties):
        return f"subspecialty {facts.subspecialty or '(none)'} not in {sorted(rule.subspecialties)}"
    if rule.priorities and facts.priority not in _lower(rule.priorities):
        return f"priority {facts.priority} not in {sorted(rule.priorities)}"
    if rule.origin_facility_ids and facts.origin_facility_id not in {
        int(i) for i in rule.origin_facility_ids
    }:
        return "origin facility not listed"
    if rule.origin_tiers and facts.origin_tier not in _lower(rule.origin_tiers):
        return f"origin tier {facts.origin_tier} not in {sorted(rule.origin_tiers)}"
    return None


def matches(rule: RoutingRule, facts: CaseFacts) -> bool:
    return rule.enabled and mismatch(rule, facts) is None


def why(rule: RoutingRule) -> str:
    """The rule's criteria in words, for the timeline ("modality MR, body part HEAD")."""
    parts = [
        f"{label} {', '.join(str(v) for v in values)}"
        for label, values in (
            ("kind", rule.kinds),
            ("modality", rule.modalities),
            ("body part", rule.body_parts),
            ("subspecialty", rule.subspecialties),
            ("priority", rule.priorities),
            ("origin facility id", rule.origin_facility_ids),
            ("origin tier", rule.origin_tiers),
        )
        if values
    ]
    return ", ".join(parts) or "any case"


def matching(rules: Iterable[RoutingRule], facts: CaseFacts) -> list[RoutingRule]:
    """The enabled rules that match, in the order they are tried (position, then id)."""
    ordered = sorted(rules, key=lambda r: (r.position, r.id or 0))
    return [r for r in ordered if matches(r, facts)]
