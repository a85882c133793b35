"""The steward's workspace for golden records (the Django admin of ``customers``), one module per area.

- ``records``: golden records (search, lineage, pins, merge, erasure, re-sync) and their cross
  references (status, unmerge); other apps add panels to a record's page through ``RECORD_PANELS``;
- ``review``: the queue of match candidates, each pair side by side, decided in one click;
- ``rules``: the rules stewards own: match rules (with a dry run) and survivorship rules;
- ``history``: the history rows, and a golden record's timeline;
- ``common``: what the others share.

Django's admin autodiscovery imports this package; importing the modules registers their admins.
"""

from customers.admin import history, matcher, records, review, rules  # noqa: F401
