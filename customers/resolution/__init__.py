"""Entity resolution: one engine deciding which golden record each source record belongs to.

- ``blocking``: match profiles and blocking keys (how candidates are found);
- ``rules``: attribute comparisons and the match rules stewards maintain;
- ``survivorship``: the golden values chosen among the sources, with lineage;
- ``store``: the unit of work every golden-record write goes through (set-based load and write);
- ``engine``: applying a batch of source-record changes, for events and backfills alike.
"""
