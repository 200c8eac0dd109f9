from __future__ import annotations

from django.apps import AppConfig


class AuthfwConfig(AppConfig):
    name = "django_authfw"
    label = "django_authfw"
    verbose_name = "Auth framework"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers checks and receivers, and the backup writer behind create_backup().
        from . import backup, cache_checks, checks, signals  # noqa: F401
