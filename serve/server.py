"""One ASGI app: the JSON API under /v1 (plus /healthz, /metrics) and the moderators' Gradio app at /."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from model.classifier import ExtortionClassifier
from model.first_stage import first_stage_for

from .api import create_api
from .settings import LoginThrottle, ServeSettings


def create_server(
    settings: ServeSettings,
    model: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    login: bool = True,
    micro_batch_wait: float = 0.005,
    cascade: str = "auto",
) -> FastAPI:
    """Load the model once and serve it to both the API and the app; the app asks moderators to log in.

    ``micro_batch_wait``: under concurrent load, seconds a model call waits for more requests to join; 0 turns micro-batching off.
    """
    import gradio as gr

    from .app import UPLOAD_MAX_BYTES, build_app

    if login and not settings.users:
        raise ValueError(
            "no moderators are configured: add [users] to the --config file or set EXTORTION_GUARD_USERS "
            "(hashes from `extortion-guard hash-password`), or pass --no-login on a machine only you can reach"
        )
    if precision == "auto":  # measured: the fastest path for one message at a time that keeps the labels
        from model.runtime import choose_runtime

        classifier = ExtortionClassifier.from_pretrained(model, device=device, precision="fp32")
        choice = choose_runtime(classifier, "single")
        print(f"extortion-guard serve: runtime {choice.path.name} ({choice.reason})", file=sys.stderr)
    else:
        classifier = ExtortionClassifier.from_pretrained(model, device=device, precision=precision)
        classifier.use_onnx_runtime()
    import jieba

    # Load jieba's dictionary, text preparation's tables and the model's first allocations now, not during the first requests.
    jieba.setLogLevel(60)  # its "Building prefix dict" lines went to the server log twice (its handler and uvicorn's)
    jieba.initialize()
    classifier.predict("预热，不给钱就差评")
    first_stage = first_stage_for(classifier.model.name_or_path, cascade)
    print(f"extortion-guard serve: first stage {'on' if first_stage else 'off'} (--cascade {cascade})", file=sys.stderr)
    api = create_api(
        classifier,
        settings.api_keys,
        micro_batching=micro_batch_wait > 0,
        max_wait=micro_batch_wait,
        rate_per_key=settings.requests_per_second_per_key,
        burst_per_key=settings.burst_per_key,
        max_in_flight=settings.max_in_flight,
        first_stage=first_stage,
    )
    auth = LoginThrottle(settings.check_login) if login else None
    return gr.mount_gradio_app(
        api,
        build_app(classifier, settings),
        path="/",
        auth=auth,
        auth_message="Extortion Guard: moderators only",
        footer_links=[],
        max_file_size=UPLOAD_MAX_BYTES,
    )
