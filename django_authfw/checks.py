"""System checks (registered in AppConfig.ready)."""
