from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from .models import Item


def items(request: HttpRequest) -> JsonResponse:
    """GET: every item, by name. POST: add one (``fail=1``: add it, then fail, inside one
    transaction)."""
    if request.method == "POST":
        name = request.POST["name"]
        if request.POST.get("fail"):
            try:
                with transaction.atomic():
                    Item.objects.create(name=name, price=0)
                    raise ValueError("refused")
            except ValueError:
                return JsonResponse({"error": "refused"}, status=409)
        item = Item.objects.create(name=name, price=int(request.POST.get("price", 0)))
        return JsonResponse({"id": item.pk}, status=201)
    listed: list[Any] = [[i.name, i.price] for i in Item.objects.order_by("name")]
    return JsonResponse({"items": listed})
