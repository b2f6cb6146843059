"""A node shell with no IO, recording what the node sends: for tests, and for measuring a node's
message handling in process (perf.logic_cost). It offers what the nodes' build() functions use of
NodeShell; handlers bound to it are called directly (`inbox`, `router`)."""

from __future__ import annotations

from cluster.links import LinkReceiver
from cluster.transport import NodeShell


class RecordingLog:
    """structlog's calling convention (event, **fields), recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.events.append((level, event, fields))


class RecordingShell:
    def __init__(self, conf) -> None:
        self.conf = conf
        self.stats = {"errors": 0}
        self.sent: list[tuple[str, object]] = []  # (peer, or "client" for a reply; message)
        self.inbox = None  # the handler bound to the node's inbox
        self.router = None  # the handler bound to the client ROUTER
        self.log = RecordingLog()
        self.audit = self  # the audit journal: what the node explained lands in `explained`
        self.explained: list = []
        self.restarted = False  # as NodeShell: started again by the supervisor
        self.router_peers: dict[bytes, tuple[str, int]] = {}  # identity -> (address, fd)
        self.on_gone = None  # the client ROUTER's on_gone (a closed connection)
        self.journal_path: str | None = None  # a journaled core journals here (None: not at all)
        self.links_in = LinkReceiver(journaled=True)
        self.input_seq = 0  # as AuditJournal: the journaled input being handled
        self.timers: list = []  # (interval_ms, fn) as bound by every(); tests call them

    failed = NodeShell.failed  # the real error accounting, on this shell's stats and log

    def journal_dir(self) -> str | None:
        return self.journal_path

    def sequenced_outboxes(self) -> list:
        return []

    def has_pending(self) -> bool:
        return False

    def next_numbers(self) -> dict[str, int]:
        return {}

    def set_next_numbers(self, numbers: dict[str, int]) -> None:
        pass

    def replay_done(self, audit_mark: int) -> None:
        del self.sent[:]

    def record(self, explanation) -> None:
        self.explained.append(explanation)

    def mark(self) -> int:
        return len(self.explained)

    def truncate(self, mark: int) -> None:
        del self.explained[mark:]

    def peer(self, name: str) -> None:
        pass

    def bind_pub(self, endpoint: str) -> None:
        pass

    def bind_private_pub(self, endpoint: str):
        return lambda frames: self.sent.append(("private", frames))

    def bind_inbox(self, fn, runs: bool = False) -> None:
        # A journaled core's inbox takes runs of (link header, messages); here nothing is sequenced.
        self.inbox = (lambda messages: fn([(None, messages)])) if runs else fn

    def subscribe(self, *args, **kwargs) -> None:
        pass

    def send(self, peer: str, message) -> None:
        self.sent.append((peer, message))

    def reply(self, router: str, identity: bytes, message) -> None:
        self.sent.append(("client", message))

    def bind_router(self, name: str, endpoint: str, fn, on_gone=None,
                    max_message: int = -1, track_peers: bool = False,
                    curve_clients: bool = False) -> None:
        self.router = fn
        self.on_gone = on_gone

    def every(self, interval_ms: int, fn, always: bool = False) -> None:
        self.timers.append((interval_ms, fn))

    publish = send

    @staticmethod
    def mono_ns() -> int:
        return 0

    now_ns = mono_ns
