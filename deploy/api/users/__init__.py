"""People who use the API and the pages: analysts and admins, their roles, tokens and whether they are active.

Shared by every app (roles and tokens are how every app authorizes people), so it lives below
them, with the rest of the API plumbing: it imports no app. Writes in ``services.py``, reads in
``selectors.py``, the API edge in ``serializers.py`` and ``views.py``.
"""
