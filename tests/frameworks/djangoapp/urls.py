from __future__ import annotations

from django.urls import path

from .shop.views import items

urlpatterns = [path("items", items)]
