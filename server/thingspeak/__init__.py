"""ThingSpeak: a compatible write/read API served by this server, and a bridge that
forwards station telemetry to a real ThingSpeak channel."""
