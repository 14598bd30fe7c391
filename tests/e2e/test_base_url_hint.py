"""A newcomer's most common slip, through the SDK: a base URL without /v1."""

from __future__ import annotations

import openai
import pytest


def test_sdk_without_v1_is_told_to_add_it(server, client):
    wrong = openai.OpenAI(base_url=server.root_url, api_key=client.api_key, max_retries=0)
    calls = (
        lambda: wrong.files.list(),
        lambda: wrong.fine_tuning.jobs.create(model="tuneforge-tiny", training_file="file-x"),
        lambda: wrong.chat.completions.create(
            model="tuneforge-tiny", messages=[{"role": "user", "content": "hi"}]
        ),
    )
    for call in calls:
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert "Did you mean /v1/" in info.value.message
        assert f'base_url="{server.root_url}/v1"' in info.value.message
