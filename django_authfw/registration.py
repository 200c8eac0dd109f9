"""Registration: checks before any hashing, the hash outside the transaction, the user row and
its audit event in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.views.decorators.debug import sensitive_variables

from . import tokens
from .audit import AuditWriter, register_event
from .exceptions import InvalidInput, UserExists
from .passwords import ahash_password
from .request_info import RequestInfo, request_info_of
from .storage.database.errors import database_errors
from .users import get_by_username, user_id_of, user_model

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser


@sensitive_variables("password")
def validate_new_password(
    password: str, username: str, extra_fields: Mapping[str, Any] | None = None
) -> None:
    """Run the project's ``AUTH_PASSWORD_VALIDATORS`` on a new account's password.

    The validators see an unsaved user with the username and ``extra_fields`` (so that
    ``UserAttributeSimilarityValidator`` compares with them, as in ``UserCreationForm``).
    Raises :class:`InvalidInput` with ``"password: "`` and the validators' messages. Used by
    :meth:`AuthFramework.register_user` and so by the ``register/`` endpoint.
    """
    model: Any = user_model()  # USERNAME_FIELD is on concrete user models only
    name = model.normalize_username(username)
    try:
        candidate = model(**{model.USERNAME_FIELD: name, **(extra_fields or {})})
    except (TypeError, ValueError):  # a field the constructor refuses: create_user reports it
        candidate = model(**{model.USERNAME_FIELD: name})
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise InvalidInput("password: " + " ".join(exc.messages)) from None


def _wants_validation(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("password_validation must be True or False.")
    return value


def _create_user(
    audit: AuditWriter,
    username: str,
    encoded: str,
    extra_fields: dict[str, Any],
    info: RequestInfo,
) -> AbstractBaseUser:
    """Create the user with the hash ``encoded`` and write the audit event in one transaction.

    The password was hashed before this is called, so that no writer holds the database's
    write lock while a slow hasher runs (on SQLite every other writer would wait for it, or
    fail with "database is locked").
    """
    model = user_model()
    manager: Any = model._default_manager
    normalized = model.normalize_username(username)
    alias = router.db_for_write(model)
    with database_errors(alias):
        try:
            with transaction.atomic(using=alias):
                if get_by_username(normalized) is not None:
                    raise UserExists(
                        f"A user named {normalized!r} already exists; choose another username."
                    )
                try:
                    # password=None: the manager stores an unusable password, at no hashing
                    # cost; the real hash is set just below, in the same transaction.
                    user: AbstractBaseUser = manager.create_user(
                        username, password=None, **extra_fields
                    )
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"The user could not be created: {exc}") from None
                # An UPDATE rather than save(): it sends no pre_save signal, so a new
                # account's first password is never taken for a password change.
                model._base_manager.using(user._state.db).filter(pk=user.pk).update(
                    password=encoded
                )
                user.password = encoded
                audit.write(register_event(user_id_of(user), info))
        except IntegrityError:
            raise UserExists(
                f"A user named {normalized!r} (or with the same unique fields) already "
                "exists; choose another username."
            ) from None
    return user


@sensitive_variables("password", "encoded")
def register_user(
    audit: AuditWriter,
    username: str,
    password: str,
    request_info: RequestInfo | None,
    password_validation: bool,
    extra_fields: dict[str, Any],
) -> AbstractBaseUser:
    """:meth:`AuthFramework.register_user <django_authfw.AuthFramework.register_user>`."""
    username = tokens.check_id(username, "username")
    tokens.check_password(password)
    info = request_info_of(request_info)
    if _wants_validation(password_validation):
        validate_new_password(password, username, extra_fields)
    encoded = make_password(password)
    return _create_user(audit, username, encoded, extra_fields, info)


@sensitive_variables("password", "encoded")
async def aregister_user(
    audit: AuditWriter,
    username: str,
    password: str,
    request_info: RequestInfo | None,
    password_validation: bool,
    extra_fields: dict[str, Any],
) -> AbstractBaseUser:
    """Async twin of :func:`register_user`; the password is hashed in a worker thread."""
    username = tokens.check_id(username, "username")
    tokens.check_password(password)
    info = request_info_of(request_info)
    if _wants_validation(password_validation):
        # Validators may query the database (a password history): not on the event loop.
        await sync_to_async(validate_new_password)(password, username, extra_fields)
    encoded = await ahash_password(password)
    # The user row and its audit event share one transaction, which must stay on one
    # thread: hence one sync_to_async call for both.
    return await sync_to_async(_create_user)(audit, username, encoded, extra_fields, info)
