from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="demo-index"),
    path("api/me/", views.me, name="demo-me"),
]
