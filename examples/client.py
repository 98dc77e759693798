#!/usr/bin/env python3
"""A completion, a chat and a streamed chat against an OpenAI-compatible server.

    python examples/client.py [--base-url http://127.0.0.1:8000/v1]
"""
import argparse

from openai import OpenAI


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="unused")
    model = client.models.list().data[0].id

    completion = client.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=24)
    print("completion:", repr(completion.choices[0].text))

    messages = [{"role": "user", "content": "Write a haiku about attention."}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=24)
    print("chat:", repr(chat.choices[0].message.content))

    print("stream: ", end="", flush=True)
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=24, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
