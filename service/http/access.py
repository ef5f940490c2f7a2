"""Who may read the dashboard: the gRPC token rules, carried by a header or a cookie.

With ``--auth-tokens``, every dashboard request but the static assets and
``/healthz`` needs a token with the ``read`` scope (``advise`` for the
advisor's suggestions), and sees only the projects the token grants. A
request carries the token either as ``Authorization: Bearer rw_...`` (scripts,
Prometheus) or as the ``runwatch_token`` cookie, which a browser gets by
opening any page with ``?token=rw_...`` once (or through the ``/login`` form):
the server checks the token, sets the cookie (HttpOnly, SameSite=Strict,
Secure over TLS) and redirects to the same page without the token in its URL.
Without a token store, everyone may read everything (loopback binds only,
see ``ServiceSettings``).

Examples
--------
>>> HttpAccess(None).principal({}, {}).can("read")
True
"""

from __future__ import annotations

from collections.abc import Mapping

from runwatch.service.tokens import ANYONE, Principal, TokenStore

COOKIE = "runwatch_token"
COOKIE_MAX_AGE = 7 * 24 * 3600


class HttpAccess:
    """Finds the :class:`Principal` of a dashboard request (``ANYONE`` when authentication is off)."""

    def __init__(self, tokens: TokenStore | None, secure_cookie: bool = False) -> None:
        self.tokens = tokens
        self.secure_cookie = secure_cookie

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    def principal(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Principal | None:
        """The caller, from its ``Authorization`` header or else its cookie; None for no valid token."""
        if self.tokens is None:
            return ANYONE
        header = headers.get("Authorization")
        if header is None and (cookie := cookies.get(COOKIE)):
            header = f"Bearer {cookie}"
        return self.tokens.authenticate(header)

    def check_token(self, token: str) -> Principal | None:
        """The principal of a bare token (a login), or None."""
        if self.tokens is None:
            return ANYONE
        return self.tokens.authenticate(f"Bearer {token.strip()}")

    def still_valid(self, principal: Principal) -> bool:
        return self.tokens is None or self.tokens.still_valid(principal)

    def cookie_options(self) -> dict:
        return {
            "httponly": True,
            "samesite": "Strict",
            "secure": self.secure_cookie,
            "path": "/",
            "max_age": COOKIE_MAX_AGE,
        }


def allowed_projects(principal: Principal) -> frozenset[str] | None:
    """The projects ``principal`` may see; None = every project."""
    return None if principal.all_projects else principal.projects
