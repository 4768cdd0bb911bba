"""The four labels, in the order the classifier's output units use."""

LABELS: tuple[str, ...] = ("extortion", "coercion", "complaint", "normal")
LABEL2ID: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
ROLES: tuple[str, ...] = ("buyer", "seller")
# Every name a chat log, a moderator or a client may give a sender's role, by the role it means.
ROLE_ALIASES: dict[str, str] = {
    "buyer": "buyer",
    "customer": "buyer",
    "user": "buyer",
    "买家": "buyer",
    "顾客": "buyer",
    "seller": "seller",
    "merchant": "seller",
    "shop": "seller",
    "store": "seller",
    "卖家": "seller",
    "商家": "seller",
    "客服": "seller",
}


def canonical_role(name: object) -> str | None:
    """``buyer`` or ``seller`` for any of :data:`ROLE_ALIASES` (case and surrounding spaces ignored); None for anything else."""
    return ROLE_ALIASES.get(str(name).strip().lower()) if name is not None else None
