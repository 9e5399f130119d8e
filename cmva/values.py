"""The moral values (Moral Foundations Theory) that cmva aligns to.

Five values by default, as in the paper: care, fairness, loyalty, authority, sanctity. Liberty is the
optional sixth (MIC annotates it; Social-Chemistry-101 does not), switched on by configuration.

Example:
    >>> from cmva.values import resolve_values
    >>> [v.name for v in resolve_values(["care", "liberty"])]
    ['care', 'liberty']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MoralValue:
    """One moral foundation.

    Attributes:
        name: Short lowercase name used everywhere in cmva (CLI, artifacts, requests).
        definition: One-line definition used in prompts (few-shot baseline, aggregator).
        mic_label: The foundation's name in MIC's `moral` column.
        socialchem_label: The foundation's name in Social-Chemistry-101's `rot-moral-foundations`.
    """

    name: str
    definition: str
    mic_label: str
    socialchem_label: str


ALL_VALUES: dict[str, MoralValue] = {
    v.name: v
    for v in (
        MoralValue(
            "care",
            "caring for others, kindness and preventing harm to people and animals",
            "care",
            "care-harm",
        ),
        MoralValue(
            "fairness",
            "justice, honesty, equal treatment and not cheating or exploiting others",
            "fairness",
            "fairness-cheating",
        ),
        MoralValue(
            "loyalty",
            "standing with your family, friends, team and community and not betraying them",
            "loyalty",
            "loyalty-betrayal",
        ),
        MoralValue(
            "authority",
            "respect for legitimate authority, rules, laws, traditions, parents and elders",
            "authority",
            "authority-subversion",
        ),
        MoralValue(
            "sanctity",
            "purity and decency: treating the body, sacred things and the dead with respect",
            "sanctity",
            "sanctity-degradation",
        ),
        MoralValue(
            "liberty",
            "personal freedom and autonomy: letting people choose for themselves",
            "liberty",
            "liberty-oppression",
        ),
    )
}

DEFAULT_VALUE_NAMES: tuple[str, ...] = ("care", "fairness", "loyalty", "authority", "sanctity")

# Lookup of every spelling a data file may use for a foundation (MIC name, SocialChem name, any case).
_ALIASES: dict[str, str] = {}
for _v in ALL_VALUES.values():
    for _alias in (_v.name, _v.mic_label, _v.socialchem_label):
        _ALIASES[_alias.lower()] = _v.name


def canonical_name(label: str) -> str:
    """Map a foundation label from MIC or SocialChem (any case) to its cmva value name.

    Raises:
        KeyError: If the label names no known moral foundation.
    """
    key = label.strip().lower()
    if key not in _ALIASES:
        raise KeyError(label)
    return _ALIASES[key]


def resolve_values(names: Iterable[str] | None = None) -> list[MoralValue]:
    """Return the configured values in the given order (the default five when `names` is None).

    Raises:
        ValueError: On an unknown or repeated value name, listing the known ones.
    """
    names = list(DEFAULT_VALUE_NAMES if names is None else names)
    if not names:
        raise ValueError("at least one moral value is required")
    out: list[MoralValue] = []
    for n in names:
        try:
            v = ALL_VALUES[canonical_name(n)]
        except KeyError:
            raise ValueError(f"unknown moral value {n!r}; known values: {', '.join(ALL_VALUES)}") from None
        if v in out:
            raise ValueError(f"moral value {v.name!r} is listed twice")
        out.append(v)
    return out


def value_names(values: Sequence[MoralValue]) -> list[str]:
    """Names of the given values, in order."""
    return [v.name for v in values]
