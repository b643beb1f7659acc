"""The Django view of the HTTP scenario, identical for every implementation."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"Hello, world!", content_type="text/plain")


urlpatterns = [path("http/", hello)]
