from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/", include("django_authfw.urls")),
    path("", include("testproject.demo.urls")),
]
