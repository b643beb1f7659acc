from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat import signals
        from consumers import users

        signals.connect()
        # Sockets close when their session ends (logout, flush, password change).
        users.connect_signals()
