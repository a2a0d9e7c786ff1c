"""The request lifecycle rule, written once: when a request has finished loading, and when a
finished request's GPU blocks may be freed.

The scheduler owns the fact: it feeds this with transfers as they complete on *every* rank, so
its answers hold for the whole engine. A worker feeds its own instance with the transfers of
its rank alone, which gives the per-rank report vLLM's worker API asks for
(``get_finished() -> (finished_sending, finished_recving)``, combined over ranks by vLLM); an
engine needing the whole engine's answer reads the scheduler, never a worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvoff.connector.messages import LOAD

__all__ = ["RequestLifecycle"]


@dataclass
class _State:
    loads: int = 0
    stores: int = 0
    finished: bool = False


class RequestLifecycle:
    """Transfers in flight per request, and the two reports derived from them.

    - *finished loading*: a request's last load in flight completed (successful or not);
      listed once per :meth:`take_finished_loading` however often that happened in between;
    - *freeable*: a finished request with no transfer of either direction in flight (a load
      still writes its GPU blocks, a store still reads them); :meth:`finish` answers at once
      whether the request is held, and a held one is listed by :meth:`take_freeable` once
      its last transfer completes.
    """

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}
        # Dicts as ordered sets: each request once, in the order it got there.
        self._loaded: dict[str, None] = {}
        self._freeable: dict[str, None] = {}

    def started(self, req_id: str, direction: str) -> None:
        state = self._states.setdefault(req_id, _State())
        if direction == LOAD:
            state.loads += 1
        else:
            state.stores += 1

    def completed(self, req_id: str, direction: str) -> bool:
        """A transfer of ``req_id`` started by :meth:`started` completed; ``True`` when that
        made the finished request freeable (it is then forgotten)."""
        state = self._states[req_id]
        if direction == LOAD:
            state.loads -= 1
            if state.loads == 0:
                self._loaded[req_id] = None
        else:
            state.stores -= 1
        return self._release_if_idle(req_id, state)

    def finish(self, req_id: str) -> bool:
        """The engine finished ``req_id``. ``True``: a transfer is in flight, so its GPU blocks
        must wait for :meth:`take_freeable`; ``False``: free them now (nothing is reported)."""
        state = self._states.get(req_id)
        if state is None:
            return False
        state.finished = True
        if state.loads or state.stores:
            return True
        del self._states[req_id]
        return False

    def in_flight(self, req_id: str) -> int:
        state = self._states.get(req_id)
        return 0 if state is None else state.loads + state.stores

    def take_finished_loading(self) -> list[str]:
        out, self._loaded = list(self._loaded), {}
        return out

    def take_freeable(self) -> list[str]:
        out, self._freeable = list(self._freeable), {}
        return out

    def _release_if_idle(self, req_id: str, state: _State) -> bool:
        if state.finished and not state.loads and not state.stores:
            del self._states[req_id]
            self._freeable[req_id] = None
            return True
        return False
