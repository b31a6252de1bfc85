"""Drives a running Switchyard server with LangChain's ChatOpenAI, as an application would.

Usage: langchain_check.py BASE_URL MODEL_ID   (run by tests/langchain_client.rs)
Exits non-zero with a message on the first failed check.

The tool is declared the way LangChain's docs declare one: a typed Python function, turned
into a schema by `bind_tools` (which sends no `additionalProperties: false`).
"""

import sys

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}")
        sys.exit(1)
    print(f"ok: {message}")


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"It is sunny in {city}."


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    llm = ChatOpenAI(base_url=base_url, api_key="unused", model=model, temperature=0,
                     max_tokens=60, max_retries=0)

    reply = llm.invoke("What is the capital of France?")
    check(isinstance(reply.content, str) and reply.content.strip(), f"plain invoke answers: {reply.content!r}")

    with_tools = llm.bind_tools([get_weather], tool_choice="required")
    message = with_tools.invoke("What's the weather in Oslo?")
    check(len(message.tool_calls) == 1, f"one tool call: {message.tool_calls} / {message.content!r}")
    call = message.tool_calls[0]
    check(call["name"] == "get_weather", f"calls get_weather: {call}")
    check(set(call["args"]) == {"city"}, f"arguments are the declared ones: {call['args']}")
    check(isinstance(call["args"]["city"], str), "city is a string")
    check(message.content == "", f"no raw JSON as content: {message.content!r}")

    # The tool result goes back, as an agent loop sends it, and is answered.
    result = get_weather.invoke(call)
    answer = llm.invoke(["What's the weather in Oslo?", message, result])
    check(isinstance(answer.content, str) and answer.content.strip(),
          f"the follow-up with the tool result is answered: {answer.content!r}")

    streamed = "".join(chunk.content for chunk in llm.stream("Say hi."))
    check(streamed.strip() != "", f"streamed answer: {streamed!r}")
    print("ALL CHECKS PASSED")


if __name__ == "__main__":
    main()
