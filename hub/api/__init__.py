"""What every API of the hub shares, whichever app serves the view.

- ``auth``: API keys (``Authorization: Bearer hub_<prefix>_<secret>``, stored hashed) and the caller they authenticate;
- ``permissions``: ``HasScope``, the one permission class: the key must hold the view's ``required_scope``;
- ``throttling``: the per-key rate, counted in the cache every web worker shares;
- ``problems``: problem details (RFC 9457) for every refusal;
- ``bodies``: reading a request body with its size limit enforced before anything is parsed.

``customers.api`` and the ``integrations`` views both use these, so they live here, at project level
(``customers`` never imports ``integrations``). The REST_FRAMEWORK settings name them as defaults.
"""
