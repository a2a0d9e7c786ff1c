"""Where the remote tier lives, parsed from a URL, with the password kept out of every string.

Accepted forms (query parameters optional, names below)::

    redis://[user:password@]host[:port][/db]         one server (or a Valkey server)
    rediss://...                                      the same over TLS
    redis+cluster://[user:password@]host[:port]       Redis / Valkey Cluster, one seed node
    rediss+cluster://...                              a cluster over TLS

Query parameters: ``timeout`` (seconds a network operation may take, default 2),
``connect_timeout`` (seconds, default 0.5), and for TLS ``ssl_ca_certs`` (a CA file),
``ssl_cert_reqs`` (``required`` | ``optional`` | ``none``), ``ssl_check_hostname``
(``true`` | ``false``), ``ssl_certfile`` / ``ssl_keyfile`` (a client certificate).
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass, field, replace

from kvoff.errors import InvalidArgumentError

__all__ = ["RemoteConfig"]

_SCHEMES = {
    "redis": (False, False),
    "rediss": (True, False),
    "redis+cluster": (False, True),
    "rediss+cluster": (True, True),
}
_CERT_REQS = ("required", "optional", "none")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RemoteConfig:
    """A parsed remote-tier URL. ``password`` is never part of ``repr``/``str``; use
    :attr:`redacted_url` wherever the address is shown."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    cluster: bool = False
    timeout: float = 2.0
    connect_timeout: float = 0.5
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @classmethod
    def from_url(cls, url: str, **overrides: object) -> RemoteConfig:
        """Parse ``url``; keyword ``overrides`` replace fields afterwards (e.g. ``timeout=``)."""
        if not isinstance(url, str):
            raise InvalidArgumentError(f"remote URL must be a str, got {type(url).__name__}")
        parts = urllib.parse.urlsplit(url)
        # From here on only the redacted form may appear in a message.
        shown = _redact(parts)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise InvalidArgumentError(
                f"remote URL {shown!r}: scheme must be one of {sorted(_SCHEMES)}, "
                f"got {parts.scheme!r}"
            )
        tls, cluster = _SCHEMES[scheme]
        if not parts.hostname:
            raise InvalidArgumentError(f"remote URL {shown!r} names no host")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise InvalidArgumentError(f"remote URL {shown!r}: the port is not a number") from None
        db = _parse_db(parts.path, shown)
        if cluster and db != 0:
            raise InvalidArgumentError(
                f"remote URL {shown!r}: a cluster has only database 0, got /{db}"
            )
        if parts.fragment:
            raise InvalidArgumentError(f"remote URL {shown!r}: a fragment means nothing here")
        options = _parse_query(parts.query, shown)
        config = cls(
            host=parts.hostname,
            port=port,
            db=db,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password is not None else None,
            tls=tls,
            cluster=cluster,
            **options,  # type: ignore[arg-type]
        )
        return config.with_options(**overrides) if overrides else config

    def with_options(self, **overrides: object) -> RemoteConfig:
        unknown = sorted(set(overrides) - set(self.__dataclass_fields__))
        if unknown:
            raise InvalidArgumentError(f"unknown remote option(s) {unknown}")
        new = replace(self, **overrides)  # type: ignore[arg-type]
        new._check()
        return new

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        for name in ("timeout", "connect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidArgumentError(
                    f"remote {name} must be a positive number of seconds, got {value!r}"
                )
        if not 0 < self.port < 65536:
            raise InvalidArgumentError(f"remote port must be in 1..65535, got {self.port}")
        if self.ssl_cert_reqs not in _CERT_REQS:
            raise InvalidArgumentError(
                f"ssl_cert_reqs must be one of {list(_CERT_REQS)}, got {self.ssl_cert_reqs!r}"
            )

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***`` (the only form to log or show)."""
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        auth = ""
        if self.username is not None or self.password is not None:
            user = urllib.parse.quote(self.username or "", safe="")
            auth = f"{user}:***@" if self.password is not None else f"{user}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        db = "" if self.cluster else f"/{self.db}"
        return f"{scheme}://{auth}{host}:{self.port}{db}"

    def __repr__(self) -> str:
        return f"RemoteConfig({self.redacted_url!r}, timeout={self.timeout})"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the password (raw or URL-quoted) removed: applied
        to every error message the tier keeps or logs, whatever produced it."""
        if not self.password:
            return text
        for secret in {self.password, urllib.parse.quote(self.password, safe="")}:
            text = text.replace(secret, "***")
        return text


def _redact(parts: urllib.parse.SplitResult) -> str:
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _parse_db(path: str, shown: str) -> int:
    text = path.lstrip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise InvalidArgumentError(
            f"remote URL {shown!r}: the path must be a database number, got {path!r}"
        )
    return int(text)


def _parse_query(query: str, shown: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name in out:
            raise InvalidArgumentError(f"remote URL {shown!r}: {name!r} given twice")
        if name in ("timeout", "connect_timeout"):
            try:
                out[name] = float(value)
            except ValueError:
                raise InvalidArgumentError(
                    f"remote URL {shown!r}: {name}={value!r} is not a number of seconds"
                ) from None
        elif name == "ssl_check_hostname":
            if value.lower() not in _BOOLS:
                raise InvalidArgumentError(
                    f"remote URL {shown!r}: ssl_check_hostname={value!r} is not true/false"
                )
            out[name] = _BOOLS[value.lower()]
        elif name in ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile"):
            out[name] = value
        else:
            raise InvalidArgumentError(f"remote URL {shown!r}: unknown parameter {name!r}")
    return out
