from django.apps import AppConfig


class ConsumersConfig(AppConfig):
    name = "consumers"
    verbose_name = "Consumers"

    def ready(self) -> None:
        from consumers import daphne_fixes

        daphne_fixes.install()
