"""Pages: the lobby, a room, inviting to a private room, and sign-up."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from chat.conf import setting
from chat.models import Room, room_name_validator


class RoomForm(forms.Form):
    name = forms.CharField(max_length=50, validators=[room_name_validator])
    private = forms.BooleanField(required=False, help_text="Only invited members may enter.")


def lobby(request: HttpRequest) -> HttpResponse:
    """The rooms this visitor may enter, and a form to open or create one."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and request.user.is_authenticated and form.is_valid():
        room, created = Room.objects.get_or_create(
            name=form.cleaned_data["name"], defaults={"private": form.cleaned_data["private"]}
        )
        if created:
            room.members.add(request.user)
        return redirect("chat:room", room=room.name)
    rooms = Room.objects.filter(private=False)
    if request.user.is_authenticated:
        rooms = Room.objects.filter(Q(private=False) | Q(members=request.user)).distinct()
    return render(request, "chat/lobby.html", {"rooms": rooms.order_by("name"), "form": form})


@login_required
def room(request: HttpRequest, room: str) -> HttpResponse:
    """A room's page; visiting a public room that does not exist yet creates it."""
    room_name_validator(room)
    found, _ = Room.objects.get_or_create(name=room)
    if not found.admits(request.user):
        raise PermissionDenied("This room is private.")
    context = {"room": found, "max_length": setting("CHAT_MAX_MESSAGE_LENGTH")}
    return render(request, "chat/room.html", context)


@login_required
@require_POST
def invite(request: HttpRequest, room: str) -> HttpResponse:
    """A member of a private room adds another user by name."""
    found = get_object_or_404(Room, name=room)
    if not found.admits(request.user):
        raise PermissionDenied("This room is private.")
    guest = get_user_model().objects.filter(username=request.POST.get("username", "")).first()
    if guest is not None:
        found.members.add(guest)
    return redirect("chat:room", room=found.name)


def signup(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save(), backend="django.contrib.auth.backends.ModelBackend")
        return redirect(request.GET.get("next") or "chat:lobby")
    return render(request, "chat/signup.html", {"form": form})
