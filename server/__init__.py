"""PicoCharge central system: OCPP 1.6-J endpoint, MQTT ingest, store, REST API and dashboard.

Run it with ``python -m server``; embed it with :class:`server.app.Application`.
"""

__version__ = "0.1.0"
