"""``/admin``: where each admin page is, with a line on what it does."""

from __future__ import annotations

from django.shortcuts import render

from frontend.access import admin_required


@admin_required
def overview(request):
    return render(request, "frontend/admin/overview.html")
