"""``Authorization: Token <token>`` for analysts and admins, looked up by the token's SHA-256 digest.

DRF's header parsing and refusals (a malformed header, an unknown token, an inactive user: each
``401 authentication_failed``), with the lookup replaced: the token is hashed first, then found by
one indexed lookup of its digest, so the work does not depend on how much of a guess matches.
A revoked token's row is gone, so it stops working at the next request.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from deploy.api.auth import hash_key


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        # Imported here: DRF imports this class when rest_framework.views loads, maybe before the models are ready.
        from deploy.api.users.models import ApiToken

        token = ApiToken.objects.select_related("user").filter(digest=hash_key(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return token.user, token
