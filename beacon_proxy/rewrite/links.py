"""The links the relay puts into a recipient's copy: one place mints them.

* the open pixel, ``public_url/o/<token>`` (:func:`open_links`), replacing a
  tracker in a *granted* recipient's copy: the token binds the recipient, the
  list, the queue id, the identity of the URL it replaced and, with
  ``[policy] forward_opens``, that URL itself (the only URL the open endpoint
  will ever contact for it);
* the preference link, ``public_url/u/<token>`` (:class:`PreferenceLinks`),
  in the ``List-Unsubscribe`` header (RFC 8058 one-click POSTs to it) and the
  footer (a person's browser GETs the preference page).  Its token binds the
  recipient, the list and the queue id and, when the relay replaced the
  sender's own ``List-Unsubscribe``, the sender's one-click URL, so that an
  unsubscribe through our link is forwarded to the sender's list too.

Tokens carry everything encrypted and authenticated (:mod:`beacon_proxy.tokens`):
no lookup, any node serves any link, and the address never shows.
"""

from __future__ import annotations

import logging

from beacon_proxy.rewrite.engine import Link
from beacon_proxy.rewrite.step import Recipient
from beacon_proxy.tokens import MAX_FORWARD, Claims, Purpose, Tokens, url_identity

__all__ = ["MAX_LINK", "PreferenceLinks", "open_links"]

log = logging.getLogger(__name__)

MAX_LINK = 900
"""Characters of a preference URL at most: ``List-Unsubscribe: <URL>,`` must fit one
998-octet header line (a URL in angle brackets must not be folded, RFC 2369)."""


def open_links(tokens: Tokens, public_url: str, recipient: str, list_id: str | None,
               queue_id: str, *, forward: bool = False) -> Link:
    """The ``link`` callback for one copy: tracker URL -> ``public_url/o/<token>``.

    With ``forward`` the token also carries the tracker URL (when it fits), for
    ``[policy] forward_opens``.
    """
    base = public_url.rstrip("/") + "/o/"

    def link(url: str) -> str:
        carried = url if forward and len(url.encode("utf-8", "replace")) <= MAX_FORWARD else ""
        claims = Claims(Purpose.OPEN, recipient, list_id, queue_id, url_identity(url),
                        forward=carried)
        try:
            return base + tokens.mint(claims)
        except UnicodeEncodeError:  # a lone surrogate in a URL: the identity still binds it
            return base + tokens.mint(Claims(Purpose.OPEN, recipient, list_id, queue_id,
                                             url_identity(url)))

    return link


class PreferenceLinks:
    """``recipient -> public_url/u/<token>`` for the unsubscribe header and the footer.

    ``forward``: carry the sender's one-click URL (``Envelope.one_click``) in the
    token, because the relay replaces the sender's ``List-Unsubscribe``.  A URL
    that would make the link longer than :data:`MAX_LINK` is left out (logged).
    Returns None when no token can be made (a recipient address longer than a
    token claim allows): the copy then goes without the header and footer.

    The header step and the footer step ask for the same recipient one after
    the other; the last link is remembered, so it is minted once per copy.
    """

    def __init__(self, tokens: Tokens, public_url: str, *, forward: bool = True) -> None:
        self.tokens = tokens
        self.base = public_url.rstrip("/") + "/u/"
        self.forward = forward
        self._last: tuple[tuple[str, str], str | None] | None = None

    def __call__(self, recipient: Recipient) -> str | None:
        env = recipient.envelope
        key = (env.queue_id, recipient.address)
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        url = self._mint(recipient)
        self._last = (key, url)
        return url

    def _mint(self, recipient: Recipient) -> str | None:
        """The link; with the sender's one-click URL to carry, that token is minted
        first and the plain one only when it cannot be used (one AES-SIV seal per copy,
        not two).  The same link and the same warnings as minting the plain one first:
        every claim the plain token packs, the carrying one packs first, so a claim
        too long for one is too long for both."""
        env = recipient.envelope
        url = ""
        if self.forward and env.one_click:
            try:
                url = self.base + self.tokens.mint(Claims(
                    Purpose.UNSUBSCRIBE, recipient.address, env.list_id, env.queue_id,
                    forward=env.one_click))
            except ValueError:
                url = ""
            if url and len(url) <= MAX_LINK:
                return url
        claims = Claims(Purpose.UNSUBSCRIBE, recipient.address, env.list_id, env.queue_id)
        try:
            plain = self.base + self.tokens.mint(claims)
        except ValueError as exc:  # a claim longer than a token allows
            log.warning("%s: no preference link for a recipient: %s", env.queue_id, exc)
            return None
        if self.forward and env.one_click:
            log.warning("%s: the sender's one-click URL is too long to carry in the link; "
                        "an unsubscribe will not be forwarded to it", env.queue_id)
        return plain
