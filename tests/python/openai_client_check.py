"""Drives a running Switchyard server with the official `openai` client.

Usage: openai_client_check.py BASE_URL MODEL_ID   (run by tests/openai_client.rs)
Exits non-zero with a message on the first failed check.
"""

import json
import sys

import openai


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}")
        sys.exit(1)
    print(f"ok: {message}")


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    models = client.models.list()
    check(any(m.id == model for m in models.data), "models.list() lists the served model")

    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=16,
    )
    text = completion.choices[0].message.content
    check(bool(text and text.strip()), f"chat completion has content: {text!r}")
    check(completion.choices[0].finish_reason in ("stop", "length"), "finish_reason is stop or length")
    check(completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens,
          "usage adds up")

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("".join(pieces) == text, "streamed text equals the non-streamed text (greedy)")
    check(finish in ("stop", "length"), "stream carries a finish_reason")
    check(usage is not None and usage.completion_tokens == completion.usage.completion_tokens,
          "stream ends with the usage chunk")

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        check(False, "unknown model raises")
    except openai.NotFoundError as err:
        check(err.status_code == 404 and err.code == "model_not_found", "unknown model -> NotFoundError 404")

    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=10_000_000)
        check(False, "max_tokens over the cap raises")
    except openai.BadRequestError as err:
        check(err.status_code == 400 and err.code == "max_tokens_exceeded", "max_tokens over cap -> BadRequestError 400")

    # Embeddings: the client asks for base64 by default and decodes it; floats on request.
    emb = client.embeddings.create(model="all-minilm-l6-v2", input=["stash my changes", "weather in Oslo"])
    check(len(emb.data) == 2 and len(emb.data[0].embedding) == 384, "embeddings: 2 x 384 (base64)")
    floats = client.embeddings.create(model="all-minilm-l6-v2", input="stash my changes", encoding_format="float")
    diff = max(abs(a - b) for a, b in zip(floats.data[0].embedding, emb.data[0].embedding))
    check(diff < 1e-6, f"base64 and float embeddings agree (max diff {diff})")
    check(emb.usage.prompt_tokens > 0, "embeddings usage")

    # The rag route's extension fields ride along in the client's typed objects.
    rag = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "how do I stash?"}],
                                         max_tokens=4, temperature=0, extra_body={"route": "rag"})
    extra = rag.model_extra or {}
    check(extra.get("route") == "rag" and isinstance(extra.get("citations"), list), "rag: route and citations")

    # Tool calls come back typed.
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    called = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather in Rome?"}],
                                            tools=[weather], tool_choice="required", max_tokens=40)
    calls = called.choices[0].message.tool_calls or []
    check(called.choices[0].finish_reason == "tool_calls" and len(calls) == 1, "tool call: finish_reason tool_calls")
    check(calls[0].function.name == "get_weather" and "city" in json.loads(calls[0].function.arguments),
          f"tool call: get_weather with a city ({calls[0].function.arguments})")

    print("ALL CHECKS PASSED")


if __name__ == "__main__":
    main()
