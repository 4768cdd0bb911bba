"""The four labels, in the order the classifier's output units use."""

LABELS: tuple[str, ...] = ("extortion", "coercion", "complaint", "normal")
LABEL2ID: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
ROLES: tuple[str, ...] = ("buyer", "seller")
