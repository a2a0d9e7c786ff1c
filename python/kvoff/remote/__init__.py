"""kvoff's second tier: blocks shared across machines through Redis / Valkey (RESP).

The pinned CPU tier stays the first tier; this one sits behind it. Everything that touches
the network runs on background threads; the step thread only submits and polls. Needs the
``remote`` extra (``pip install 'kvoff[remote]'``: redis-py and xxhash). docs/REMOTE.md
describes the design and its failure rules.
"""

from __future__ import annotations

from kvoff.remote.codec import HEADER_BYTES, Rejected
from kvoff.remote.config import RemoteConfig
from kvoff.remote.keys import Keyspace, RemoteLayout
from kvoff.remote.link import Link
from kvoff.remote.reader import FetchResult, LookupResult, RemoteFetcher, RemoteLookup
from kvoff.remote.stats import ERROR_KINDS, REMOTE_DIRECTIONS, RemoteStats
from kvoff.remote.tier import RemoteTier
from kvoff.remote.writer import WriteBehind

__all__ = [
    "ERROR_KINDS",
    "HEADER_BYTES",
    "REMOTE_DIRECTIONS",
    "FetchResult",
    "Keyspace",
    "Link",
    "LookupResult",
    "Rejected",
    "RemoteConfig",
    "RemoteFetcher",
    "RemoteLayout",
    "RemoteLookup",
    "RemoteStats",
    "RemoteTier",
    "WriteBehind",
]
