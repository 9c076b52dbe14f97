from django.urls import path

from billing.finance import views

urlpatterns = [
    path("usage/", views.usage_page, name="finance-usage"),
    path("usage.csv", views.usage_csv, name="finance-usage-csv"),
    path("over-limit/", views.over_limit_page, name="finance-over-limit"),
    path("over-limit.csv", views.over_limit_csv, name="finance-over-limit-csv"),
    path("credit/", views.credit_page, name="finance-credit"),
    path("credit.csv", views.credit_csv, name="finance-credit-csv"),
    path("trends/", views.trends_page, name="finance-trends"),
]
