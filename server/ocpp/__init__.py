"""OCPP 1.6-J central system: frames, schema validation, handlers, connections, endpoint."""
