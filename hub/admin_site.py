"""The hub's admin site: every action declares its permission, a refused action is a 403, and a
list filter the database cannot run is a 400.

Django offers an action to a user only when the user has the permissions the action
declares; an action that declares none is offered to anyone who may view the list. So
``HubAdminSite.check`` fails the system checks (``manage.py check``, every test run and
deployment) for an action that declares no permission, and every model admin registered
here refuses a posted action the user may not run with 403 Forbidden, instead of Django's
quiet "No action selected" redirect that leaves a caller guessing.

Any user who may view a list may add lookups of its fields to the query string
(``?received_at__year=0``). Django turns what such a lookup raises while the filter is
built into a redirect; what it raises only when the query is compiled or run was a 500.
Every model admin registered here answers that with 400, naming the parameters.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.views.main import ERROR_FLAG, IGNORED_PARAMS, PAGE_VAR, SEARCH_VAR
from django.core import checks
from django.core.exceptions import PermissionDenied
from django.db import DataError, ProgrammingError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from hub.problems import problem_response

logger = logging.getLogger(__name__)

# What a lookup from the query string raises when its query is compiled or run: a year Python
# cannot bound (0, -1, 10**20; 9999 in a date hierarchy, whose end is the next year), a __range
# of one value, a regular expression PostgreSQL cannot compile, an operator of an extension
# that is not installed (trigram_similar, unaccent).
_LOOKUP_ERRORS = (ValueError, OverflowError, IndexError, DataError, ProgrammingError)
_LIST_CONTROLS = frozenset({*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG})


class RefuseUnworkableFilters:
    """Mixed into every registered model admin: a list filter or search that cannot run is a 400."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        filters = [name for name in request.GET if name not in _LIST_CONTROLS]
        if not filters and not request.GET.get(SEARCH_VAR):
            return super().changelist_view(request, extra_context)  # type: ignore[misc]
        try:
            response = super().changelist_view(request, extra_context)  # type: ignore[misc]
            if isinstance(response, TemplateResponse):
                response.render()  # the rows, the date hierarchy and the facets are read while rendering
        except _LOOKUP_ERRORS as exc:
            # The model and the error's type only: the message may quote the value.
            logger.warning("refused a filter of the %s list (%s)", self.model._meta.label, type(exc).__name__)  # type: ignore[attr-defined]
            return problem_response(
                400,
                "Invalid filter",
                "The list cannot be filtered or searched by this.",
                errors=[{"field": f"query.{name}", "message": "is not a filter this list can run"} for name in filters]
                or [{"field": f"query.{SEARCH_VAR}", "message": "is not a search this list can run"}],
            )
        return response


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


# Outermost first: a filter that cannot run is answered before an action is looked at.
_GUARDS = (RefuseUnworkableFilters, RefuseUnpermittedActions)


class HubAdminSite(admin.AdminSite):
    site_header = "Customer hub"
    site_title = "Customer hub"
    index_title = "Golden records, sync runs and stewardship"
    # The hub has no site outside the admin: Django's "View site" link led to a 404.
    site_url = None

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = admin_class or admin.ModelAdmin
        guards = tuple(guard for guard in _GUARDS if not issubclass(admin_class, guard))
        if guards:
            admin_class = type(
                admin_class.__name__,
                (*guards, admin_class),
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
