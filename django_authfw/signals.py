"""Signal receivers (registered in AppConfig.ready)."""
