"""URLs of the JSON endpoints; include them under a prefix of your choice::

    path("auth/", include("django_authfw.urls")),

Names live in the ``authfw`` namespace: ``reverse("authfw:token")``. See docs/http-api.md.
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "authfw"

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="register"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("token/refresh/", views.RefreshView.as_view(), name="token-refresh"),
    path("token/revoke/", views.RevokeView.as_view(), name="token-revoke"),
    path("token/introspect/", views.IntrospectView.as_view(), name="token-introspect"),
    path("logout-all/", views.LogoutAllView.as_view(), name="logout-all"),
    path("sessions/", views.SessionListView.as_view(), name="sessions"),
    path("sessions/<str:session_id>/", views.SessionDetailView.as_view(), name="session-detail"),
]
