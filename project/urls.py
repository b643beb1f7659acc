from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path("", include("chat.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("echo/", TemplateView.as_view(template_name="project/echo.html"), name="echo"),
    path("admin/", admin.site.urls),
]
