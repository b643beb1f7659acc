from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from chat.views import ThrottledLoginView
from project.metrics import metrics

urlpatterns = [
    path("", include("chat.urls")),
    # Before Django's own: the login page with attempts limited per user name and address.
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("echo/", TemplateView.as_view(template_name="project/echo.html"), name="echo"),
    path("admin/", admin.site.urls),
    # This process's Prometheus metrics; for allowed networks, a token or staff only.
    path("metrics", metrics, name="metrics"),
]
