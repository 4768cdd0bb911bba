"""One ASGI app: the JSON API under /v1 (plus /healthz, /metrics) and the moderators' Gradio app at /."""

from __future__ import annotations

from fastapi import FastAPI

from model.classifier import ExtortionClassifier

from .api import create_api
from .settings import ServeSettings


def create_server(settings: ServeSettings, model: str | None = None, precision: str = "auto", device: str = "auto",
                  login: bool = True) -> FastAPI:
    """Load the model once and serve it to both the API and the app; the app asks moderators to log in."""
    import gradio as gr

    from .app import build_app

    if login and not settings.users:
        raise ValueError(
            "no moderators are configured: add [users] to the --config file or set EXTORTION_GUARD_USERS "
            "(hashes from `extortion-guard hash-password`), or pass --no-login on a machine only you can reach"
        )
    classifier = ExtortionClassifier.from_pretrained(model, device=device, precision=precision)
    api = create_api(classifier, settings.api_keys)
    auth = settings.check_login if login else None
    return gr.mount_gradio_app(api, build_app(classifier, settings), path="/", auth=auth,
                               auth_message="Extortion Guard: moderators only", footer_links=[])
