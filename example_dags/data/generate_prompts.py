"""Regenerates prompts.jsonl beside this file: the same 300 sample prompts on every run.

Usage: python example_dags/data/generate_prompts.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "support": [
        "Summarise this customer message in one sentence: {x}",
        "Classify the sentiment (positive, neutral, negative) of: {x}",
        "Draft a two-sentence polite reply to: {x}",
    ],
    "catalog": [
        "Write a 25-word product description for: {x}",
        "List three search keywords for: {x}",
        "Suggest a short, friendly product title for: {x}",
    ],
    "engineering": [
        "Explain in plain words what this log line means: {x}",
        "Suggest a likely cause for: {x}",
        "Write a one-line commit message for a change that fixes: {x}",
    ],
}
SUBJECTS = {
    "support": [
        "my parcel arrived two days late but the driver was lovely",
        "the app logs me out every time I switch networks",
        "I was charged twice for the same order",
        "thanks, the replacement kettle works perfectly",
        "how do I change the delivery address after ordering",
        "the size guide was wrong, the shoes are too small",
    ],
    "catalog": [
        "a stainless steel insulated water bottle, 750 ml",
        "a wool blend winter scarf in forest green",
        "a cordless drill with two batteries and a carry case",
        "a set of four ceramic espresso cups",
        "a waterproof hiking backpack, 30 litres",
        "a LED desk lamp with adjustable colour temperature",
    ],
    "engineering": [
        "connection pool exhausted after 30 s waiting for a connection",
        "OOMKilled: container exceeded memory limit of 512Mi",
        "certificate verify failed: unable to get local issuer certificate",
        "deadlock detected while updating table orders",
        "429 Too Many Requests from the payments API",
        "disk usage on /var at 97%",
    ],
}


def main() -> None:
    rng = random.Random(20261125)
    rows = []
    for n in range(1, 301):
        topic = rng.choice(sorted(TOPICS))
        template = rng.choice(TOPICS[topic])
        subject = rng.choice(SUBJECTS[topic])
        rows.append({"id": f"p-{n:04d}", "topic": topic, "prompt": template.format(x=subject)})
    target = Path(__file__).with_name("prompts.jsonl")
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
