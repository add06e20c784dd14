"""The therapy billing plugin: rules, findings -> cards, services, app, settings, storage, CLI."""
