"""Local emulators of the external systems the hub talks to: tools for the tests and the demo, not product.

- :mod:`sandboxes.marketing_cloud`: Salesforce Marketing Cloud (auth, data extensions, SOAP, ENS) and
  a Journey Builder player (``python -m sandboxes.marketing_cloud``).
- :mod:`sandboxes.salesforce`: the Salesforce core REST API calls the hub makes
  (``python -m sandboxes.salesforce``).
- :mod:`sandboxes.http`: the HTTP plumbing both share.

The direction is one-way: an emulator may import a product declaration it must emulate exactly (the
data extension schema in :mod:`integrations.marketing_cloud.schema`), and nothing in ``hub``,
``customers`` or ``integrations`` imports this package. ``manage.py run_hub`` (``make run``) starts the
Marketing Cloud emulator as a child process. None of it imports Django.
"""
