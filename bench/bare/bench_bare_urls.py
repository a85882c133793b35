"""The hub's URLs plus ``POST /bench/bare``: a DRF view that reads the body and answers, touching nothing."""

from typing import Any

from django.urls import include, path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class BareView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        return Response({"status": "accepted", "bytes": len(request.body)})


urlpatterns = [path("bench/bare", BareView.as_view()), path("", include("hub.urls"))]
