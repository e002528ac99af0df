"""TLS failures in an administrator's words: which certificate problem, and what fixes it.

A failed certificate check has several causes with different cures: a name the
certificate was not issued for (no CA file helps), a CA this system does not trust
(`tls_ca_file` helps), the wrong CA file, an expired certificate. CalDAV, SMTP and IMAP
give the same advice; `check_ca_file` refuses a CA file that is not PEM at the door.
"""

from __future__ import annotations

import ssl

# OpenSSL's X509_V_ERR_* codes that name the cause.
_NAME_MISMATCH = {62, 64}  # hostname, IP address
_EXPIRED = {10}
_UNTRUSTED = {2, 18, 19, 20, 21, 27}


def _verification_error(error: BaseException) -> tuple[int | None, str]:
    """The OpenSSL verify code and message found in `error`'s chain (None, text if none)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    text = ""
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_code, current.verify_message or str(current)
        text = text or str(current)
        for nested in (current.__cause__, current.__context__, *current.args):
            if isinstance(nested, BaseException):
                pending.append(nested)
    lowered = text.lower()
    if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
        return 62, "hostname mismatch"
    if "certificate has expired" in lowered:
        return 10, "certificate has expired"
    if "self-signed" in lowered or "self signed" in lowered or "local issuer" in lowered:
        return 20, "unable to get local issuer certificate"
    return None, text


def certificate_advice(
    error: BaseException, *, section: str, host: str, ca_file: str | None, name_key: str
) -> str:
    """What went wrong with `host`'s certificate and what to change, in one sentence.

    `section` is the config section ("caldav", "smtp", "imap"), `name_key` the key that
    holds the server's name there ("url" or "host").
    """
    code, detail = _verification_error(error)
    if code in _NAME_MISMATCH:
        advice = (
            f"the TLS certificate of {host} is not issued for that name ({detail}): set "
            f"[{section}] {name_key} to a name the certificate names"
        )
        if ca_file:
            advice += f" (tls_ca_file cannot fix a name mismatch; {ca_file} is not the problem)"
        return advice
    if code in _EXPIRED:
        return f"the TLS certificate of {host} has expired: renew it on the server"
    if code in _UNTRUSTED:
        if ca_file:
            return (
                f"the TLS certificate of {host} is not signed by the CA in [{section}] "
                f"tls_ca_file ({ca_file}): point tls_ca_file at the CA that signed it"
            )
        return (
            f"the TLS certificate of {host} is signed by a CA this system does not trust: "
            f"set [{section}] tls_ca_file to that CA's certificate (PEM)"
        )
    hint = "" if ca_file else f"; a private CA goes in [{section}] tls_ca_file"
    return f"TLS with {host} failed ({detail or type(error).__name__}){hint}"


def check_ca_file(path: str) -> str | None:
    """Why `path` cannot be used as a CA file (None when it holds PEM certificates)."""
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        return f"no such file {path!r}"
    except ssl.SSLError:  # before OSError: it is one
        return f"{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
    except OSError as e:
        return f"{path} cannot be read ({e.strerror or e})"
    return None
