"""The one composition root: a configuration becomes the services, for every front end.

The CLI, the daemon, the demo and the web interface all build their publisher,
dispatcher, mail service and poller here, wired the same way (invitations recorded for
`on_invitation_sent`; in iMIP mode every publish queues and sends its mails). The
daemon's tick is made of the steps below (`poll`, `run_hooks`, `send_scheduled`,
`send_notices`, `read_mail`), and `tmcaldav sync` and `tmcaldav mail ingest` call the
same steps. Services are built on
first use, so a command that needs only the store never imports the CalDAV client.
"""

from __future__ import annotations

import threading
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from tmcaldav.config import Config, load_config

if TYPE_CHECKING:
    from tmcaldav.hooks.dispatch import Dispatcher, DispatchResult
    from tmcaldav.hooks.plugins import TmcaldavPluginManager
    from tmcaldav.imip.service import MailService, MailTickResult
    from tmcaldav.notices import NoticeResult
    from tmcaldav.publish import Publisher
    from tmcaldav.scheduled import ScheduledResult
    from tmcaldav.store import Store
    from tmcaldav.store.lock import StoreLock
    from tmcaldav.sync import Poller, PollResult


def open_store(url: str) -> Store:
    """The store behind `url` with the checks every unit of work must pass: a change that
    makes a suggestion untrue withdraws it in the same transaction, whoever makes the
    change (`tmcaldav.hooks.premises`). Every store that services write to is built here."""
    from tmcaldav.hooks.premises import keep_suggestions_true
    from tmcaldav.store import Store

    return Store(url, checks=(keep_suggestions_true,))


class App:
    """The services of one configuration, each built on first use.

    Give a config file's path (read on first use, so `--help` stays fast) or a parsed
    `Config`; a `Store` may be shared (the daemon keeps its store across reloads).
    """

    def __init__(
        self, path: str | None = None, *, config: Config | None = None, store: Store | None = None
    ):
        if path is None and config is None:
            raise ValueError("App needs a config file path or a Config")
        self.path = path if path is not None else (config.path if config else "")
        if config is not None:
            self.config = config
        if store is not None:
            self.store = store
        self._publisher: Publisher | None = None
        self._poller: Poller | None = None
        # Set by the daemon on a stop request: hook calls are abandoned, none start.
        self.stopping = threading.Event()

    @cached_property
    def config(self) -> Config:
        """The validated configuration (ConfigError when it is not usable)."""
        return load_config(self.path)

    @cached_property
    def store(self) -> Store:
        """The store, checked to be at the current schema (StoreUnavailable if not)."""
        store = open_store(self.config.store.url)
        store.check_schema()
        return store

    # ---- the services ----------------------------------------------------------------

    @property
    def publisher(self) -> Publisher:
        """The publisher (connected to the server on first use), wired for hooks and mail."""
        if self._publisher is None:
            from tmcaldav.hooks.dispatch import watch_invitations
            from tmcaldav.publish import Publisher

            publisher = Publisher(self.config, self.store)
            # Invitations made by any front end reach on_invitation_sent.
            watch_invitations(publisher)
            if self.mail is not None:
                # tmcaldav is the scheduling agent: each publish mails the students, and
                # answers by mail are written with this publisher.
                self.mail.attach(publisher)
            self._publisher = publisher
        return self._publisher

    @cached_property
    def mail(self) -> MailService | None:
        """The iMIP mail service in `imip` mode; None in `server` mode."""
        if self.config.scheduling.mode != "imip":
            return None
        from tmcaldav.imip.service import MailService

        # Built without a publisher of its own: `publisher` attaches itself.
        return MailService(self.config, self.store, None)

    @cached_property
    def plugin_manager(self) -> TmcaldavPluginManager:
        """The plugins of this configuration (entry points, plugin_dirs, settings)."""
        from tmcaldav.hooks.plugins import get_plugin_manager

        return get_plugin_manager(self.config)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Runs the hooks for the outbox and the time checks."""
        from tmcaldav.hooks.dispatch import Dispatcher

        return Dispatcher(
            self.config, self.store, self.publisher, self.plugin_manager, stop=self.stopping
        )

    @property
    def poller(self) -> Poller:
        """The poller of the configured calendar (connects on first use)."""
        if self._poller is None:
            from tmcaldav.sync import Poller

            self._poller = Poller.for_config(self.config, self.store, self.publisher.calendar)
        return self._poller

    def lock(self, role: str = "daemon") -> StoreLock:
        """The store lock the daemon (`role` "daemon" or "once") and `tmcaldav sync`
        ("sync") hold while they tick."""
        from tmcaldav.store.lock import StoreLock

        return StoreLock(self.store, self.config.daemon.lock_file, role)

    def reconnect(self) -> None:
        """Drop the connection: the next step connects again (the server may have come back
        as someone else), and every service uses the new publisher."""
        self._poller = None
        self._publisher = None
        if "dispatcher" in self.__dict__:
            self.dispatcher.publisher = self.publisher

    def close(self) -> None:
        """Tell the plugins we are done with them (on_shutdown); the store stays open."""
        if "dispatcher" in self.__dict__:
            self.dispatcher.close()
            del self.__dict__["dispatcher"]

    # ---- the daemon's steps ------------------------------------------------------------

    def poll(self, *, accept_empty: bool = False) -> PollResult:
        """Poll the server's answers into the store (one transaction)."""
        return self.poller.poll(accept_empty=accept_empty)

    def run_hooks(self, now: datetime | None = None) -> DispatchResult:
        """Run the hooks for every pending change, the time checks and auto-apply."""
        return self.dispatcher.run(now)

    def send_scheduled(self, now: datetime | None = None) -> ScheduledResult:
        """Invite the students whose scheduled invitation is due (`[invitation]
        send_days_before`, `session add --invite-at`), each once."""
        from tmcaldav.scheduled import send_scheduled

        return send_scheduled(self.store, self.publisher, self.config, now)

    def send_notices(self, now: datetime | None = None) -> NoticeResult:
        """Mail the notices plugins left for the administrator (over [smtp])."""
        from tmcaldav.notices import send_notices

        return send_notices(self.store, self.config, now)

    def read_mail(self, now: datetime | None = None) -> MailTickResult | None:
        """iMIP: read the mailbox, apply answers, send due mails; None in server mode."""
        if self.mail is None:
            return None
        self.publisher  # noqa: B018 - attaches the publisher answers are written with
        return self.mail.tick(now)
