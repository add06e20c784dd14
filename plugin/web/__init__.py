"""Web pages served by the service: the sandbox, the SMART app, and shared pictures."""
