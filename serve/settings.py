"""Server settings: moderators and their password hashes, API keys, folders.

From a TOML file (``--config``) and the environment; the environment adds to the file:

```toml
api_keys = ["key-for-the-chat-platform"]
inbox = "data/annotations/inbox"       # where moderators' decisions go
batch_root = "runs"                    # batch output folders the review queue may open
requests_per_second_per_key = 20       # 0 (the default): no limit; over it, 429 with Retry-After
max_in_flight = 256                    # requests answered at once; more get 503

[users]                                # name = hash from `extortion-guard hash-password`
alice = "scrypt$16384$8$1$9f0c...$5be1..."
```

``EXTORTION_GUARD_USERS="alice:scrypt$...,bob:scrypt$..."`` and
``EXTORTION_GUARD_API_KEYS="k1,k2"``. There is no default user or password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from model import paths

SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass
class ServeSettings:
    users: dict[str, str] = field(default_factory=dict)
    """Moderator name to password hash."""

    api_keys: list[str] = field(default_factory=list)
    """Bearer tokens accepted by the JSON API; none means the API is open."""

    inbox: Path = Path(paths.INBOX)
    """Folder the moderators' decisions are appended to."""

    batch_root: Path = Path("runs")
    """Folder whose batch outputs the review queue lists."""

    requests_per_second_per_key: float = 0.0
    """Average requests a second each API key (or client address, with no keys) may make; 0: no limit (over it: 429)."""

    burst_per_key: int = 20
    """Requests a key may make at once before its rate applies."""

    max_in_flight: int = 256
    """Requests the API answers at once; more get 503 with Retry-After."""

    def check_login(self, username: str, password: str) -> bool:
        stored = self.users.get(username)
        return stored is not None and check_password(password, stored)


class LoginThrottle:
    """Wraps a login check: after ``attempts`` failures in a row a name is refused for ``lockout`` seconds, whatever the password."""

    def __init__(self, check, attempts: int = 5, lockout: float = 300.0, max_names: int = 10_000, clock=time.monotonic):
        self.check, self.attempts, self.lockout, self.max_names, self.clock = check, attempts, lockout, max_names, clock
        self._failures: dict[str, tuple[int, float]] = {}  # name: (failures in a row, locked until)

    def __call__(self, username: str, password: str) -> bool:
        now = self.clock()
        failures, locked_until = self._failures.pop(username, (0, 0.0))
        if locked_until > now:
            self._failures[username] = (failures, locked_until)
            return False
        if self.check(username, password):
            return True
        failures += 1
        self._failures[username] = (0, now + self.lockout) if failures >= self.attempts else (failures, 0.0)
        if len(self._failures) > self.max_names:  # names are chosen by whoever tries: keep the table bounded
            del self._failures[next(iter(self._failures))]
        return False


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex), with a random salt."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    except ValueError:  # a malformed hash never matches
        return False
    return hmac.compare_digest(computed.hex(), digest)


def load_settings(config: str | os.PathLike | None = None, environ: dict | None = None) -> ServeSettings:
    environ = os.environ if environ is None else environ
    values: dict = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"{config}: no such settings file")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{config}: not valid TOML: {error}") from error
    users = dict(values.get("users", {}))
    for item in filter(None, environ.get("EXTORTION_GUARD_USERS", "").split(",")):
        name, _, stored = item.partition(":")
        if not name.strip() or not stored.strip():
            raise ValueError("EXTORTION_GUARD_USERS: each item must be NAME:HASH")
        users[name.strip()] = stored.strip()
    keys = list(values.get("api_keys", [])) + [k.strip() for k in environ.get("EXTORTION_GUARD_API_KEYS", "").split(",") if k.strip()]
    return ServeSettings(
        users=users,
        api_keys=keys,
        inbox=Path(values.get("inbox", paths.INBOX)),
        batch_root=Path(values.get("batch_root", "runs")),
        requests_per_second_per_key=float(values.get("requests_per_second_per_key", 0.0)),
        burst_per_key=int(values.get("burst_per_key", 20)),
        max_in_flight=int(values.get("max_in_flight", 256)),
    )
