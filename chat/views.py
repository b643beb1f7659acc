"""Pages: the lobby, a room, inviting to a private room, sign-up and a throttled login.

Rooms are only ever created by the lobby's form (a POST, within a per-user quota), never by
visiting a URL, so nobody can take a name by guessing links. A room the visitor may not
enter answers 404, as a missing one does: its existence is not revealed.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.views import LoginView
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from chat import limits
from chat.conf import setting
from chat.models import Room, room_name_validator

ROOMS_PER_PAGE = 50


class RoomForm(forms.Form):
    name = forms.CharField(max_length=50, validators=[room_name_validator])
    private = forms.BooleanField(required=False, help_text="Only invited members may enter.")


def lobby(request: HttpRequest) -> HttpResponse:
    """The rooms this visitor may enter, a page at a time, and a form to open or create one."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and request.user.is_authenticated and form.is_valid():
        found = open_or_create(request, form)
        if found is not None:
            return redirect("chat:room", room=found.name)
    rooms = Room.objects.filter(private=False)
    if request.user.is_authenticated:
        rooms = Room.objects.filter(Q(private=False) | Q(members=request.user)).distinct()
    page = Paginator(rooms.order_by("name").only("name", "private"), ROOMS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(request, "chat/lobby.html", {"page": page, "form": form})


def open_or_create(request: HttpRequest, form: RoomForm) -> Room | None:
    """The room to go to, or None with the reason added to ``form``. An existing name is
    only reused for an open public room: asking for a private one never lands in a room
    someone else made, and a private room the user is not in is just "taken"."""
    name, private = form.cleaned_data["name"], form.cleaned_data["private"]
    existing = Room.objects.filter(name=name).first()
    if existing is not None:
        if not private and not existing.private:
            return existing
        if existing.private and existing.members.filter(pk=request.user.pk).exists():
            return existing
        form.add_error("name", "That name is taken; choose another.")
        return None
    quota = setting("CHAT_ROOMS_PER_USER")
    if Room.objects.filter(created_by=request.user).count() >= quota:
        form.add_error(None, f"You have opened {quota} rooms already, the most one person may.")
        return None
    try:
        room = Room.objects.create(name=name, private=private, created_by=request.user)
    except IntegrityError:  # someone else created it a moment ago
        form.add_error("name", "That name is taken; choose another.")
        return None
    room.members.add(request.user)
    return room


def visible_room(request: HttpRequest, name: str) -> Room:
    """The room named ``name`` if this user may enter it; 404 otherwise, missing or not."""
    found = Room.objects.filter(name=name).first()
    if found is None or not found.admits(request.user):
        raise Http404("No such room.")
    return found


@login_required
def room(request: HttpRequest, room: str) -> HttpResponse:
    found = visible_room(request, room)
    context = {"room": found, "max_length": setting("CHAT_MAX_MESSAGE_LENGTH")}
    return render(request, "chat/room.html", context)


@login_required
@require_POST
def invite(request: HttpRequest, room: str) -> HttpResponse:
    """A member of a private room adds another user by name."""
    found = visible_room(request, room)
    guest = get_user_model().objects.filter(username=request.POST.get("username", "")).first()
    if guest is not None and found.private:
        found.members.add(guest)
    return redirect("chat:room", room=found.name)


def safe_next(request: HttpRequest) -> str | None:
    """``next`` when it leads back into this site, else None (no open redirect)."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


def signup(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save(), backend="django.contrib.auth.backends.ModelBackend")
        target = safe_next(request)
        return HttpResponseRedirect(target) if target else redirect("chat:lobby")
    return render(request, "chat/signup.html", {"form": form, "next": safe_next(request)})


class ThrottledAuthenticationForm(AuthenticationForm):
    """Login attempts per user name and per client address are limited, shared by every
    process (chat/limits.py), so passwords cannot be guessed at speed."""

    def clean(self):
        username = (self.data.get("username") or "").strip().lower()
        address = limits.client_address_of(self.request)
        per_user = limits.allow_now(f"login:user:{username}", *setting("CHAT_LOGINS_PER_USER"))
        per_address = limits.allow_now(
            f"login:address:{address}", *setting("CHAT_LOGINS_PER_ADDRESS")
        )
        if not (per_user and per_address):
            raise forms.ValidationError(
                "Too many login attempts; wait a minute and try again.", code="throttled"
            )
        return super().clean()


class ThrottledLoginView(LoginView):
    form_class = ThrottledAuthenticationForm
