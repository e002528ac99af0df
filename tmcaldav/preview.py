"""What a publish would send, for `--dry-run`: the mails (iMIP mode) or the event's
scheduling instructions to the server (server mode), exactly as they would go.

`Previewer` is handed to a Publisher operation as its `preview`: the operation plans on
a snapshot that is rolled back, shows the plan here, and writes nothing anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from tmcaldav.config import Config
from tmcaldav.publish import Published
from tmcaldav.store.model import TrainingSession, utcnow


@dataclass(frozen=True)
class PreviewItem:
    """One thing that would be sent: to whom, how, and its text."""

    to: tuple[str, ...]
    # "mail" (tmcaldav sends it) or "server" (the scheduling server sends it).
    channel: str
    method: str
    reason: str
    subject: str
    text: str


@dataclass
class Previewer:
    """Collects what a dry run would send (call it as a Publisher `preview`)."""

    config: Config
    items: list[PreviewItem] = field(default_factory=list)

    def __call__(self, db: Session, session: TrainingSession, published: Published) -> None:
        if self.config.scheduling.mode == "imip":
            self._mails(session, published)
        else:
            self._server(session, published)

    def _mails(self, session: TrainingSession, published: Published) -> None:
        from tmcaldav.imip.deliveries import compose_message, plan_messages

        enrollments = {e.person.email: e for e in session.enrollments}
        replaced = dict(published.replaced)
        now = utcnow()
        for address, method, reason in plan_messages(published):
            enrollment = enrollments.get(address) or enrollments.get(replaced.get(address, ""))
            if enrollment is None:
                continue
            other = address if address != enrollment.person.email else None
            outgoing = compose_message(
                self.config,
                session,
                enrollment,
                method,
                reason,
                published.sequence,
                now,
                message_id="<dry-run@tmcaldav>",
                address=other,
            )
            message = outgoing.message
            plain = message.get_body(("plain",))
            text = plain.get_content() if plain is not None else ""
            self.items.append(
                PreviewItem(
                    (outgoing.to,),
                    "mail",
                    method,
                    reason,
                    str(message["Subject"]),
                    f"From: {message['From']}\nTo: {message['To']}\n"
                    f"Subject: {message['Subject']}\n\n{text}",
                )
            )

    def _server(self, session: TrainingSession, published: Published) -> None:
        from tmcaldav.imip.deliveries import invitation_facts
        from tmcaldav.invitations import event_description

        recipients = tuple(sorted(published.invited | published.resend))
        if not recipients:
            return
        description = event_description(
            self.config, invitation_facts(self.config, session, None)
        )
        how = (
            "asked to send the invitation again (SCHEDULE-FORCE-SEND=REQUEST)"
            if published.resend
            else "added as attendees (the server invites them)"
        )
        what = "Reminder" if published.kind == "remind" else "Invitation"
        self.items.append(
            PreviewItem(
                recipients,
                "server",
                "REQUEST",
                published.kind,
                f"{what}: {session.title}",
                f"The CalDAV server sends the event of {session.key} "
                f"(SEQUENCE {published.sequence}) to: {', '.join(recipients)}\n"
                f"They are {how}.\n\nDESCRIPTION:\n{description or '(none)'}\n",
            )
        )

    def render(self) -> str:
        """The dry run for people: every item, separated, and what was left unchanged."""
        if not self.items:
            return "nothing would be sent"
        blocks = []
        for item in self.items:
            head = (
                f"--- mail to {item.to[0]} ({item.method}, {item.reason})"
                if item.channel == "mail"
                else f"--- by the server to {', '.join(item.to)} ({item.method}, {item.reason})"
            )
            blocks.append(f"{head}\n{item.text.rstrip()}")
        return "\n\n".join(blocks) + "\n\n(dry run: nothing was sent or changed)"
