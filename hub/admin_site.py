"""The hub's admin site: every action declares its permission, and a refused action is a 403.

Django offers an action to a user only when the user has the permissions the action
declares; an action that declares none is offered to anyone who may view the list. So
``HubAdminSite.check`` fails the system checks (``manage.py check``, every test run and
deployment) for an action that declares no permission, and every model admin registered
here refuses a posted action the user may not run with 403 Forbidden, instead of Django's
quiet "No action selected" redirect that leaves a caller guessing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.core import checks
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


class RefuseUnpermittedActions:
    """Mixed into every registered model admin: a declared action the user may not run is a 403."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "POST":
            posted = set(request.POST.getlist("action"))
            if posted:
                declared = {name for _, name, _ in self._get_base_actions()}  # type: ignore[attr-defined]
                permitted = set(self.get_actions(request))  # type: ignore[attr-defined]
                if posted & declared - permitted:
                    raise PermissionDenied("You may not run this action.")
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


class HubAdminSite(admin.AdminSite):
    site_header = "Customer hub"
    site_title = "Customer hub"
    index_title = "Golden records, sync runs and stewardship"

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, RefuseUnpermittedActions):
            admin_class = type(
                admin_class.__name__,
                (RefuseUnpermittedActions, admin_class),
                {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
            )
        super().register(model_or_iterable, admin_class, **options)

    def check(self, app_configs: Any) -> list[checks.CheckMessage]:
        errors = list(super().check(app_configs))
        for model, model_admin in self._registry.items():
            for func, name, _ in model_admin._get_base_actions():
                if not getattr(func, "allowed_permissions", None):
                    errors.append(
                        checks.Error(
                            f"The admin action {name!r} of {model._meta.label} declares no permission.",
                            hint="Declare it: @admin.action(permissions=[...]); an action without one is offered to "
                            "anyone who may view the list.",
                            obj=type(model_admin),
                            id="hub.E001",
                        )
                    )
        return errors


class HubAdminConfig(AdminConfig):
    default_site = "hub.admin_site.HubAdminSite"
