"""``python -m sandboxes.salesforce [--host H] [--port P] [--verbose]``: serve the Salesforce emulator."""

from sandboxes.salesforce.server import main

main()
