"""The official OpenAI and Anthropic Python SDKs as clients of tenant-quota (tests/e2e_llm_sdk.rs).

usage: llm_clients.py BASE_URL TENANT_PREFIX

Prints one JSON object per line: what the SDK handed the application for each call (its usage
on success; the exception's class, status, code, type and message on an error). Retries are
off (max_retries=0) so a 429 reaches the application as it was sent.
"""
import json
import sys

import anthropic
import openai

base, prefix = sys.argv[1], sys.argv[2]


def oai(tenant):
    return openai.OpenAI(base_url=base + "/v1", api_key="test", max_retries=0, default_headers={"x-tenant-id": tenant})


def ant(tenant):
    return anthropic.Anthropic(base_url=base, api_key="test", max_retries=0, default_headers={"x-tenant-id": tenant})


def out(case, **kw):
    print(json.dumps(dict(case=case, **kw)), flush=True)


def openai_error(case, e):
    body = e.body if isinstance(e.body, dict) else {}
    out(case, error=type(e).__name__, status=e.status_code, code=e.code, type=e.type, message=e.message, body=body)


def anthropic_error(case, e):
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    out(case, error=type(e).__name__, status=e.status_code, type=err.get("type"), message=err.get("message"), body=body)


MSG = [{"role": "user", "content": "Say hello."}]

# OpenAI Chat, JSON: the first call fits the budget, the second does not.
c = oai(prefix + "-oai")
for case in ("openai_json_1", "openai_json_2"):
    try:
        r = c.chat.completions.create(model="gpt-4o", messages=MSG)
        out(case, usage=r.usage.total_tokens)
    except openai.APIStatusError as e:
        openai_error(case, e)

# OpenAI Chat, streamed: the usage is in the last chunk (the filter asks for it).
c = oai(prefix + "-stream")
total = None
for chunk in c.chat.completions.create(model="gpt-4o", messages=MSG, stream=True, stream_options={"include_usage": True}):
    if chunk.usage is not None:
        total = chunk.usage.total_tokens
out("openai_stream", usage=total)

# A tenant id that is not visible ASCII: 400.
try:
    oai(prefix + " bad").chat.completions.create(model="gpt-4o", messages=MSG)
    out("openai_400", error=None)
except openai.APIStatusError as e:
    openai_error("openai_400", e)

# Anthropic Messages: JSON, then over the budget, then a 400.
a = ant(prefix + "-ant")
for case in ("anthropic_json_1", "anthropic_json_2"):
    try:
        r = a.messages.create(model="claude-sonnet-4", max_tokens=10, messages=MSG)
        out(case, usage=r.usage.input_tokens + r.usage.output_tokens)
    except anthropic.APIStatusError as e:
        anthropic_error(case, e)
try:
    ant(prefix + " bad").messages.create(model="claude-sonnet-4", max_tokens=10, messages=MSG)
    out("anthropic_400", error=None)
except anthropic.APIStatusError as e:
    anthropic_error("anthropic_400", e)
