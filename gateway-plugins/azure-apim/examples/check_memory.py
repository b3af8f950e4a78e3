"""Talk to the memory-enabled chat API through API Management with the official openai client.

    CHAT_BASE_URL=https://<apim>.azure-api.net/memory-chat MODEL=<deployment or model name> \
    APIM_SUBSCRIPTION_KEY=... python examples/check_memory.py

The first call tells the model a fact; Astrocyte retains both turns after the answer. The second
call, a few seconds later, asks for it back: X-Astrocyte-Memory should say "hit" and the answer
should use the fact. Exit status 0 when both calls report what they should.
"""

from __future__ import annotations

import os
import sys
import time

from openai import OpenAI


def ask(client: OpenAI, model: str, text: str) -> tuple[str, str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    answer = raw.parse().choices[0].message.content or ""
    return (
        answer,
        raw.headers.get("x-astrocyte-memory", "absent"),
        raw.headers.get("x-astrocyte-retain", "absent"),
    )


def main() -> int:
    client = OpenAI(
        base_url=os.environ["CHAT_BASE_URL"],
        api_key="unused",  # APIM replaces the model key; the subscription key identifies the caller
        default_headers={"Ocp-Apim-Subscription-Key": os.environ["APIM_SUBSCRIPTION_KEY"]},
    )
    model = os.environ["MODEL"]
    answer, memory, retain = ask(client, model, "Please remember: my favourite tea is genmaicha.")
    print(f"1st call: memory={memory} retain={retain}\n  {answer[:200]}")
    time.sleep(float(os.environ.get("CHECK_WAIT_SECONDS", "5")))  # the retain is one-way: let it land
    answer, memory, retain = ask(client, model, "Which tea do I like best?")
    print(f"2nd call: memory={memory} retain={retain}\n  {answer[:200]}")
    return 0 if memory == "hit" and retain == "queued" else 1


if __name__ == "__main__":
    sys.exit(main())
