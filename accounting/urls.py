from django.urls import path

from accounting import views

urlpatterns = [
    path("budgets", views.BudgetsView.as_view(), name="budgets"),
    path("budgets/me", views.MyBudgetView.as_view(), name="budget-me"),
    path("budgets/analysts/<str:username>", views.AnalystBudgetView.as_view(), name="budget-analyst"),
    path("budgets/groups/<str:name>", views.GroupBudgetView.as_view(), name="budget-group"),
    # budgets/partitions/<metric> is telemetry's (telemetry/urls.py): a metric is a telemetry object.
]
