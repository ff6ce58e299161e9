from django.apps import AppConfig


class UsersConfig(AppConfig):
    """Users' API tokens (``users_apitoken``): a Django app inside the shared plumbing, below every app."""

    name = "deploy.api.users"
    label = "users"
    default_auto_field = "django.db.models.BigAutoField"
