"""The ``vllm.general_plugins`` entry point: kvoff's spec and connector by name.

vLLM runs general plugins in the front end, the engine core and every worker, possibly more than
once per process, so registering is idempotent. Registration is lazy on vLLM's side (a module
path and a class name), so this imports nothing of kvoff's vLLM adapter.
"""

from __future__ import annotations

from collections.abc import Callable

from kvoff.errors import InvalidStateError

__all__ = ["CONNECTOR_NAME", "MODULE", "SPEC_NAME", "register"]

SPEC_NAME = "KvoffOffloadingSpec"
CONNECTOR_NAME = "KvoffConnector"
MODULE = "kvoff.vllm"


def _register_once(
    register: Callable[[str, str, str], None],
    resolve: Callable[[str], type],
    name: str,
    module: str,
) -> None:
    try:
        register(name, module, name)
    except ValueError:
        # Already registered: harmless when it is ours, a clash otherwise.
        found = resolve(name)
        ours = found.__module__ == module or found.__module__.startswith(module + ".")
        if not ours or found.__qualname__ != name:
            raise InvalidStateError(
                f"vLLM already has {name!r} registered as {found.__module__}.{found.__qualname__}"
            ) from None


def register() -> None:
    """Register ``"KvoffOffloadingSpec"`` with vLLM's offloading-spec factory and
    ``"KvoffConnector"`` with its connector factory."""
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    from vllm.v1.kv_offload.factory import OffloadingSpecFactory

    _register_once(
        OffloadingSpecFactory.register_spec,
        lambda n: OffloadingSpecFactory.get_spec_cls({"spec_name": n}),
        SPEC_NAME,
        MODULE,
    )
    _register_once(
        KVConnectorFactory.register_connector,
        KVConnectorFactory.get_connector_class_by_name,
        CONNECTOR_NAME,
        MODULE,
    )
