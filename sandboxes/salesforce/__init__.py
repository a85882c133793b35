"""A local emulator of the Salesforce core REST API calls the hub makes (see :mod:`.server`)."""
