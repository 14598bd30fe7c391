"""The README quickstart, runnable: upload → fine-tune tuneforge-tiny → watch → chat.

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-tf-… python examples/quickstart.py

Nothing here is tuneforge-specific: it is plain `openai` SDK code, as you would write it for
OpenAI's service (only the model name differs).
"""

import sys
import time
from pathlib import Path

from openai import OpenAI

client = OpenAI()  # reads OPENAI_BASE_URL and OPENAI_API_KEY

data = Path(__file__).with_name("train.jsonl")
training_file = client.files.create(file=data.open("rb"), purpose="fine-tune")
job = client.fine_tuning.jobs.create(
    model="tuneforge-tiny",
    training_file=training_file.id,
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 15}}},
    suffix="quickstart",
    seed=7,
)
print("created", job.id, job.status)

while job.status not in ("succeeded", "failed", "cancelled"):
    time.sleep(2)
    job = client.fine_tuning.jobs.retrieve(job.id)
    latest = client.fine_tuning.jobs.list_events(job.id, limit=1).data
    print(f"  {job.status:<16} {latest[0].message if latest else ''}")

if job.status != "succeeded":
    sys.exit(f"job ended {job.status}: {job.error}")

for ckpt in client.fine_tuning.jobs.checkpoints.list(job.id):
    print("checkpoint", ckpt.step_number, ckpt.fine_tuned_model_checkpoint, ckpt.metrics.train_loss)
print("model", job.fine_tuned_model, "trained_tokens", job.trained_tokens)

answer = client.chat.completions.create(
    model=job.fine_tuned_model,
    messages=[
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    temperature=0,
)
print("answer:", answer.choices[0].message.content)
