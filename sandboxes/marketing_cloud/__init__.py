"""A local emulator of Salesforce Marketing Cloud (:mod:`.server`) and a Journey Builder player (:mod:`.journey`)."""
