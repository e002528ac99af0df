"""iMIP (RFC 6047): tmcaldav as the scheduling agent for servers that do no scheduling.

`message` composes REQUEST/CANCEL and validates incoming REPLY messages (pure),
`deliveries` queues and records each message to each student, `replies` applies a
validated REPLY, `transport` speaks SMTP, IMAP and Maildir, and `service.MailService`
— the package's one public face — ties them together for the daemon and the CLI.
"""
