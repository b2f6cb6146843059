"""The shell's runner for a core that is not journaled (oracle, liquidator): it feeds the core each
input with the time it came at, `core.handle(msg, now_ns) -> [(destination, message)]`, and routes
the effects: "audit" to the audit journal, "pub" to the node's PUB under the message's topic, any
other destination to that peer. A timer is an input too (ClockTick). A core that raises on one
input (a bug) costs that input alone: counted in `errors` and logged (`message_failed`); an
IllegalTransition (a lifecycle table with no row for the event) is logged as `illegal_transition`
and its explanation journaled. Risk and matching run under cluster/runner.py instead, which
journals their inputs before their effects leave."""

from __future__ import annotations

from collections.abc import Callable

from cluster.core import IllegalTransition


class CoreFeed:
    def __init__(self, shell, core, node: str, *, topic: Callable[[object], bytes] | None = None,
                 on_effect: Callable[[str, object], None] | None = None) -> None:
        """`topic`: a "pub" effect's PUB topic; `on_effect(destination, message)`: what the
        shell does besides routing it (its metrics, its log lines), after it is routed."""
        self.shell = shell
        self.core = core
        self.node = node
        self.topic = topic
        self.on_effect = on_effect

    def on_messages(self, messages: list) -> None:
        """A drained batch (inbox or subscription): one time for all of it."""
        now = self.shell.now_ns()
        for msg in messages:
            self.feed(msg, now)

    def feed(self, msg, now_ns: int) -> None:
        shell = self.shell
        try:
            effects = self.core.handle(msg, now_ns)
        except IllegalTransition as exc:  # the table refused it before anything changed
            shell.failed("illegal_transition", type(msg).__name__, exc)
            shell.audit.record(exc.explanation(self.node, now_ns))
            return
        except Exception as exc:  # a bug on one message must not cost the rest of the batch
            shell.failed("message_failed", type(msg).__name__, exc)
            return
        on_effect = self.on_effect
        for dest, effect in effects:
            if dest == "audit":
                shell.audit.record(effect)
            elif dest == "pub":
                shell.publish(self.topic(effect), effect)
            else:
                shell.send(dest, effect)
            if on_effect is not None:
                on_effect(dest, effect)
