"""Every token Switchboard signs, in one format: ``<prefix>.<base64url(body)>.<base64url(mac)>``,
the mac an HMAC-SHA256 over ``<prefix>.<base64url(body)>``.

Each kind of token has its own prefix and its own key, derived from the platform secret for its
purpose (`purpose_key`), so a token of one kind never verifies as another: access tokens
(``sb1``, switchboard.core.auth; signed with the secret itself, as they always were), chat
visitor tokens (``sv1``), case list page tokens (``pt1``), call recording tickets (``rt1``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

MALFORMED = "malformed"
BAD_ENCODING = "bad encoding"
FORGED = "signature does not match"


class TokenError(ValueError):
    """A token that does not open: `reason` is MALFORMED, BAD_ENCODING or FORGED."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as in tokens."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Strict inverse of b64url_encode: raises ValueError on any character outside base64url."""
    # validate=True: characters outside the alphabet are an error, not silently skipped.
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def purpose_key(secret: str, purpose: str) -> bytes:
    """The key of one kind of token, derived from the platform secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


class Sealer:
    """Seals bodies into tokens of one kind (`prefix`, `key`) and opens them again."""

    def __init__(self, key: bytes, prefix: str, max_length: int = 4096) -> None:
        self._key = key
        self.prefix = prefix
        self._max_length = max_length

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, f"{self.prefix}.{body}".encode(), hashlib.sha256).digest()

    def seal(self, body: bytes) -> str:
        encoded = b64url_encode(body)
        return f"{self.prefix}.{encoded}.{b64url_encode(self._mac(encoded))}"

    def open(self, token: object) -> bytes:
        """The body sealed in `token`; TokenError if it is not a token of this kind, is badly
        encoded, or was not sealed with this key (compared in constant time)."""
        if not isinstance(token, str) or len(token) > self._max_length:
            raise TokenError(MALFORMED)
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != self.prefix:
            raise TokenError(MALFORMED)
        try:
            given = b64url_decode(parts[2])
            body = b64url_decode(parts[1])
        except ValueError:
            raise TokenError(BAD_ENCODING) from None
        if not hmac.compare_digest(self._mac(parts[1]), given):
            raise TokenError(FORGED)
        return body
