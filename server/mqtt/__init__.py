"""MQTT side: the embedded broker and the telemetry/presence ingest."""
