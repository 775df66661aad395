"""Azure Functions entry point (Python v2 programming model).

Triggers only: each parses its input, calls one function in ``shared/`` and maps the result.
Service modules are imported inside the triggers, so a cold start pays for ``azure.functions``
and this file, not for httpx, azure-identity, the Storage and Key Vault clients or pyodbc.
"""

from __future__ import annotations

import azure.functions as func

from shared.web import WebRequest, WebResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _request(req: func.HttpRequest) -> WebRequest:
    return WebRequest(
        method=req.method,
        url=req.url,
        params=dict(req.params),
        headers=dict(req.headers),
        body=req.get_body(),
        route_params=dict(req.route_params),
    )


def _response(res: WebResponse) -> func.HttpResponse:
    return func.HttpResponse(
        body=res.body, status_code=res.status, mimetype=res.mimetype, headers=dict(res.headers)
    )


# --- consent -------------------------------------------------------------------------------
# /oauth/start needs the function key: whoever completes a consent decides whose administration
# the connection reads. The callback is anonymous (a browser redirect carries no key) and is
# protected by the signed, single-use state bound to the browser that started it.


@app.route(route="oauth/start", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def oauth_start(req: func.HttpRequest) -> func.HttpResponse:
    from shared.oauth.http import start_consent
    from shared.runtime import current

    return _response(start_consent(current(), _request(req)))


@app.route(route="oauth/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    from shared.oauth.http import complete_consent
    from shared.runtime import current

    return _response(complete_consent(current(), _request(req)))


@app.route(route="connections/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def connection_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.oauth.http import connection_status as status
    from shared.runtime import current

    return _response(status(current(), _request(req)))


@app.timer_trigger(schedule="%ROTATE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def rotate_tokens(timer: func.TimerRequest) -> None:
    from shared.oauth.rotation import rotate_all
    from shared.runtime import current

    rotate_all(current())


# --- loads ---------------------------------------------------------------------------------


@app.route(route="sync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def request_sync(req: func.HttpRequest) -> func.HttpResponse:
    from shared.runtime import current
    from shared.sync.http import request_sync as request

    return _response(request(current(), _request(req)))


@app.route(route="webhooks/exact", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def exact_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.runtime import current
    from shared.sync.webhook import receive_webhook

    return _response(receive_webhook(current(), _request(req)))


@app.timer_trigger(schedule="%SYNC_SCHEDULE%", arg_name="timer", run_on_startup=False)
def schedule_syncs(timer: func.TimerRequest) -> None:
    from shared.runtime import current
    from shared.sync.planner import schedule_all

    schedule_all(current())


@app.queue_trigger(arg_name="msg", queue_name="%LOAD_QUEUE%", connection="AzureWebJobsStorage")
def load_step(msg: func.QueueMessage) -> None:
    from shared.runtime import current
    from shared.sync.loader import run_step_message

    run_step_message(current(), msg.get_body(), dequeue_count=msg.dequeue_count or 1)
