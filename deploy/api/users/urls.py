from django.urls import path

from deploy.api.users import views

urlpatterns = [
    path("users", views.UsersView.as_view(), name="users"),
    path("users/<str:username>", views.UserDetailView.as_view(), name="user-detail"),
    path("users/<str:username>/token", views.UserTokenView.as_view(), name="user-token"),
]
