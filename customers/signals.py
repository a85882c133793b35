"""Signals through which the MDM domain asks the outside world for work.

``customers`` never imports ``integrations``; integrations connects receivers here.
"""

from django.dispatch import Signal

# Sent inside the steward's transaction; receivers enqueue with the same commit.
# Arguments: individual, actor.
resync_requested = Signal()

# Sent inside the transaction that wrote a ChangeEvent (the outbox row); receivers
# queue its delivery with the same commit. Arguments: change_event.
change_recorded = Signal()

# Sent inside the erasure's transaction, so the other stores (inbound events, dead
# letters, notifications) are scrubbed in it too. Arguments: individual, source_records
# (a list of (system, external_id)), actor.
individual_erased = Signal()

# Sent inside a merge's transaction: the survivor's source records now carry another
# master ID, so connectors queue the survivor's write-back. Arguments: survivor, retired, actor.
golden_records_merged = Signal()

# Sent inside an unmerge's transaction: the split-off source record has a new master ID
# to write back. Arguments: cross_reference, original, split, actor.
cross_reference_unmerged = Signal()

# Sent at the end of a unit of work's flush (inside its transaction) when golden records got an
# opt-out of all marketing, or an earlier one: connectors tell the systems that send marketing.
# Arguments: opt_outs, a list of (individual_id, since, consent_source).
marketing_opt_outs_recorded = Signal()
