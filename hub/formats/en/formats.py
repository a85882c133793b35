"""English date formats for the hub: one ISO-like format everywhere, as the steward's pages print them.

The locale's own ("Dec. 1, 2026, 5:48 p.m.") differs from the dates the hub prints itself
(history, lineage, consent: 2026-12-01 17:48), so the admin showed two formats on one page.
"""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
