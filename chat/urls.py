from django.urls import path, re_path

from chat import views
from chat.models import ROOM_NAME_PATTERN

app_name = "chat"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("accounts/signup/", views.signup, name="signup"),
    re_path(rf"^chat/(?P<room>{ROOM_NAME_PATTERN})/$", views.room, name="room"),
    re_path(rf"^chat/(?P<room>{ROOM_NAME_PATTERN})/invite/$", views.invite, name="invite"),
]
