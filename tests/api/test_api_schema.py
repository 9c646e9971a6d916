"""Schemathesis against the API's own OpenAPI document: bounded examples per operation, never a 5xx.

Every operation is generated from ``/openapi.json`` (so a module's endpoint is
fuzzed as soon as its command exists): random multipart files, random config
text, random run ids and query values. Bad input must be a 4xx with a
message; a 5xx is a bug.
"""

from __future__ import annotations

from dataclasses import replace

import schemathesis
from hypothesis import HealthCheck, settings

from qflow.api import ServerSettings, create_app

#: Examples per operation: enough to hit each loader's error paths, small enough for the default run.
MAX_EXAMPLES = 25

#: Schemathesis's in-process client names the host "testserver": allow it (and only it) here.
_SETTINGS = replace(ServerSettings.from_environment(), hosts=("testserver",))
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings=_SETTINGS))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code in (413, 422) and case.path.endswith("/plan"):
        detail = response.json()["detail"]
        assert detail, "a rejected plan request says why"
