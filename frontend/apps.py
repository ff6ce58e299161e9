import mimetypes

from django.apps import AppConfig


class FrontendConfig(AppConfig):
    name = "frontend"
    verbose_name = "Pages for analysts and admins"

    def ready(self) -> None:
        # Before any static file is served, by frontend.static_files or by runserver's own handler:
        # a browser refuses an ES module (the browser SDK) served with another type.
        mimetypes.add_type("text/javascript", ".mjs")
        mimetypes.add_type("text/javascript", ".js")
