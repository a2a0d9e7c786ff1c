"""Remote key names: a block's content hash inside a namespace that says what its bytes mean.

Two engines share a block only if everything that shapes its bytes matches: the model, the
KV layout, the dtype, the block sizes, the bytes per block and the tensor-parallel rank and
size. All of it goes into :class:`RemoteLayout`, whose 16-byte digest is part of every key and
of every value's header, so engines with different models or layouts use disjoint keys and a
value moved under a foreign key is still recognised as foreign.

Keys are ``<prefix>:<layout digest, 32 hex>:<b|i><hash hex>``: ``b`` for a ``bytes`` hash,
``i`` for an ``int`` (16-byte two's complement), so an int and a byte string never share a key
(the manager never equates them either). There are no ``{...}`` hash tags: in a cluster each
key falls in its own slot, so a model's blocks spread over every node.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import xxhash

from kvoff.errors import HashTypeError, InvalidArgumentError

__all__ = ["Keyspace", "RemoteLayout"]

BlockHash = bytes | int

# Bumping this invalidates every key of older kvoff versions (they sit in another namespace).
KEY_FORMAT = 1
_MAX_HASH_BYTES = 256
_INT_MIN, _INT_MAX = -(1 << 127), (1 << 127) - 1


@dataclass(frozen=True)
class RemoteLayout:
    """Everything that gives a block's bytes their meaning.

    ``block_bytes`` is the size of one value's payload (one CPU block); ``extra`` holds
    anything else that changes the bytes (a KV-cache quantisation, a pipeline stage, a cache
    salt) as sorted ``(name, value)`` string pairs.
    """

    model: str
    dtype: str
    layout: str
    block_bytes: int
    cpu_block_size: int
    gpu_block_size: int
    tp_rank: int = 0
    tp_size: int = 1
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("model", "dtype", "layout"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(f"RemoteLayout.{name} must be a non-empty str")
        for name in ("block_bytes", "cpu_block_size", "gpu_block_size", "tp_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidArgumentError(
                    f"RemoteLayout.{name} must be a positive int, got {value!r}"
                )
        if self.cpu_block_size % self.gpu_block_size:
            raise InvalidArgumentError(
                f"RemoteLayout: cpu_block_size={self.cpu_block_size} is not a multiple of "
                f"gpu_block_size={self.gpu_block_size}"
            )
        if not isinstance(self.tp_rank, int) or not 0 <= self.tp_rank < self.tp_size:
            raise InvalidArgumentError(
                f"RemoteLayout.tp_rank must be in [0, tp_size={self.tp_size}), got {self.tp_rank!r}"
            )
        extra = tuple(self.extra)
        if any(
            not (isinstance(p, tuple) and len(p) == 2 and all(isinstance(s, str) for s in p))
            for p in extra
        ):
            raise InvalidArgumentError("RemoteLayout.extra must hold (str, str) pairs")
        object.__setattr__(self, "extra", tuple(sorted(extra)))

    def for_rank(self, tp_rank: int) -> RemoteLayout:
        """The same layout as seen by another tensor-parallel rank (its own shard's keys)."""
        return replace(self, tp_rank=tp_rank)

    def digest(self) -> bytes:
        """16 bytes naming this layout (BLAKE2b of a canonical JSON form)."""
        fields = {
            "key_format": KEY_FORMAT,
            "model": self.model,
            "dtype": self.dtype,
            "layout": self.layout,
            "block_bytes": self.block_bytes,
            "cpu_block_size": self.cpu_block_size,
            "gpu_block_size": self.gpu_block_size,
            "tp_rank": self.tp_rank,
            "tp_size": self.tp_size,
            "extra": [list(p) for p in self.extra],
        }
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=16).digest()


class Keyspace:
    """Key names and the header fields for one :class:`RemoteLayout`."""

    def __init__(self, layout: RemoteLayout, *, prefix: str = "kvoff") -> None:
        if not prefix or any(c in prefix for c in "{}: \r\n"):
            raise InvalidArgumentError(
                f"key prefix must be non-empty without braces, colons or spaces, got {prefix!r}"
            )
        self.layout = layout
        self.digest = layout.digest()
        self.prefix = prefix
        self._head = f"{prefix}:{self.digest.hex()}:".encode()

    @property
    def block_bytes(self) -> int:
        return self.layout.block_bytes

    def key(self, block_hash: BlockHash) -> bytes:
        # bool is an int, as it is for the manager; anything else but bytes is refused.
        if isinstance(block_hash, bytes):
            if not block_hash or len(block_hash) > _MAX_HASH_BYTES:
                raise InvalidArgumentError(
                    f"a bytes block hash must have 1..{_MAX_HASH_BYTES} bytes, "
                    f"got {len(block_hash)}"
                )
            return self._head + b"b" + block_hash.hex().encode()
        if isinstance(block_hash, int):
            if not _INT_MIN <= block_hash <= _INT_MAX:
                raise InvalidArgumentError(
                    f"an int block hash must fit in 128 signed bits, got {block_hash}"
                )
            raw = int(block_hash).to_bytes(16, "big", signed=True)
            return self._head + b"i" + raw.hex().encode()
        raise HashTypeError(f"a block hash must be bytes or int, got {type(block_hash).__name__}")

    def keys(self, block_hashes: list[BlockHash]) -> list[bytes]:
        return [self.key(h) for h in block_hashes]


def key_tag(key: bytes) -> int:
    """The 64-bit tag of a key that its value's header carries (a value under another key is
    foreign even when the layout matches)."""
    return xxhash.xxh3_64_intdigest(key)
