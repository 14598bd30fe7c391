"""Regenerates this corpus of bad training files and expected.json (run it inside this folder).

Each case is a small JSONL file; expected.json maps its name to the [line, code, param] of every
error the validator must report, in order. Edit the cases here, not the files by hand.
"""

import json


def good(i):
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"What is {i}+{i}?"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
    )


cases = {}


def case(name, lines, expected, trailing_newline=True, raw=None):
    body = "\n".join(lines) + ("\n" if trailing_newline else "")
    data = raw if raw is not None else body.encode()
    open(f"{name}.jsonl", "wb").write(data)
    cases[name] = expected


G = [good(i) for i in range(20)]
IF = "invalid_training_file"
case(
    "not_json",
    G[:2]
    + [
        '{"messages": [{"role": "user", "content": "hi"}',
    ]
    + G[2:5]
    + ["hello there"]
    + G[5:10],
    [[3, IF, None], [7, IF, None]],
)
case(
    "not_object",
    [G[0], "[1, 2]", G[1], G[2], '"just a string"', G[3], G[4], "null", G[5], G[6], "42"] + G[7:10],
    [[2, IF, None], [5, IF, None], [8, IF, None], [11, IF, None]],
)
case(
    "messages_missing_or_empty",
    [
        '{"prompt_text": "x"}',
        G[0],
        G[1],
        '{"messages": []}',
        G[2],
        '{"messages": "hello"}',
        '{"messages": null}',
    ]
    + G[3:10],
    [[1, IF, "messages"], [4, IF, "messages"], [6, IF, "messages"], [7, IF, "messages"]],
)
case(
    "unknown_role",
    [G[0], json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]})]
    + G[1:7]
    + [
        json.dumps({"messages": [{"content": "no role here"}, {"role": "assistant", "content": "ok"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": 3, "content": "yo"}]}),
    ]
    + G[7:10],
    [[2, IF, "messages[1].role"], [9, IF, "messages[0].role"], [10, IF, "messages[1].role"]],
)
case(
    "missing_content",
    [
        json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}),
        G[0],
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 12}]}),
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": None},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
    ]
    + G[1:10],
    [
        [1, IF, "messages[0].content"],
        [3, IF, "messages[1].content"],
        [4, IF, "messages[1].content"],
        [5, IF, "messages[0].content"],
    ],
)
case(
    "no_assistant",
    G[:4]
    + [json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]})]
    + G[4:10]
    + [json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}]})],
    [[5, IF, "messages"], [12, IF, "messages"]],
)
case(
    "bad_weight",
    [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            }
        )
    ]
    + G[:3]
    + [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": True},
                ]
            }
        ),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q", "weight": 1},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": "0"},
                ]
            }
        ),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 0.5},
                ]
            }
        ),
    ]
    + G[3:10],
    [
        [1, IF, "messages[1].weight"],
        [5, IF, "messages[1].weight"],
        [6, IF, "messages[0].weight"],
        [7, IF, "messages[1].weight"],
        [8, IF, "messages[1].weight"],
    ],
)
U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
case(
    "bad_types",
    [
        json.dumps({"messages": [{"role": "user", "content": "q", "name": 5}, A]}),
        json.dumps(
            {
                "messages": [
                    U,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
                        ],
                    },
                ]
            }
        ),
        json.dumps({"messages": [U, A], "tools": {"type": "function"}}),
        json.dumps({"messages": [U, A], "parallel_tool_calls": "yes"}),
        json.dumps(
            {
                "messages": [
                    U,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "content": "42"},
                    A,
                ]
            }
        ),
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    },
                    A,
                ]
            }
        ),
        json.dumps({"messages": [U, {"role": "assistant", "content": "a", "extra": 1}]}),
        json.dumps({"messages": [U, {"role": "assistant", "content": None, "tool_calls": []}]}),
        json.dumps({"messages": [U, {"role": "assistant", "function_call": {"name": "f"}}]}),
        json.dumps({"messages": ["hello", A]}),
        json.dumps(
            {
                "messages": [
                    U,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    },
                ]
            }
        ),
    ]
    + G[:10],
    [
        [1, IF, "messages[0].name"],
        [2, IF, "messages[1].tool_calls[0].function.arguments"],
        [3, IF, "tools"],
        [4, IF, "parallel_tool_calls"],
        [5, IF, "messages[2].tool_call_id"],
        [6, IF, "messages[0].content[0].type"],
        [7, IF, "messages[1].extra"],
        [8, IF, "messages[1].tool_calls"],
        [9, IF, "messages[1].function_call.arguments"],
        [10, IF, "messages[0]"],
        [11, IF, "messages[1].tool_calls[0].id"],
    ],
)
case(
    "truncated_last_line",
    G[:11] + ['{"messages": [{"role": "user", "content": "wh'],
    [[12, IF, None]],
    trailing_newline=False,
)
raw = (
    ("\n".join(G[:3]) + "\n").encode()
    + b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}\n'
    + ("\n".join(G[3:10]) + "\n").encode()
)
case("non_utf8", [], [[4, IF, None]], raw=raw)
case("too_few_examples", G[:7], [[None, "invalid_n_examples", None]])
case(
    "mixed_formats",
    G[:4]
    + [json.dumps({"prompt": "q", "completion": "a"})]
    + G[4:10]
    + [json.dumps({"prompt": "q2", "completion": "a2"})],
    [[5, IF, None], [12, IF, None]],
)
dpo = json.dumps(
    {
        "input": {"messages": [U]},
        "preferred_output": [A],
        "non_preferred_output": [{"role": "assistant", "content": "b"}],
    }
)
case("dpo_for_sft", [dpo] * 10, [[i, IF, None] for i in range(1, 11)])
# blank lines and CRLF endings: numbering must count every physical line
raw = (
    ("\r\n".join(G[:2]) + "\r\n\r\n\r\n").encode()
    + b'{"messages": [{"role": "robot", "content": "x"}]}\r\n'
    + ("\r\n".join(G[2:10]) + "\r\n").encode()
)
case("blank_lines_crlf", [], [[5, IF, "messages[0].role"]], raw=raw)
case(
    "prompt_completion_bad",
    [json.dumps({"prompt": "q", "completion": "a"})] * 5
    + [json.dumps({"prompt": "q"}), json.dumps({"prompt": 1, "completion": "a"})]
    + [json.dumps({"prompt": "q", "completion": "a"})] * 5
    + [json.dumps({"messages": [U, A]})],
    [[6, IF, "completion"], [7, IF, "prompt"], [13, IF, None]],
)


# --- DPO: cases named pref_* are validated as a DPO job's file (method "dpo") -------------------
def pref(i, **kw):
    example = {
        "input": {"messages": [{"role": "user", "content": f"What is {i}+{i}?"}]},
        "preferred_output": [{"role": "assistant", "content": str(2 * i)}],
        "non_preferred_output": [{"role": "assistant", "content": "I do not know."}],
    }
    example.update(kw)
    return json.dumps({k: v for k, v in example.items() if v is not None})


P = [pref(i) for i in range(20)]
B = [{"role": "assistant", "content": "b"}]
case(
    "pref_outputs_bad",
    [pref(0, preferred_output=None), pref(1, non_preferred_output=[])]
    + P[:3]
    + [
        pref(2, preferred_output={"role": "assistant", "content": "4"}),
        pref(3, non_preferred_output=B + B),
        pref(4, preferred_output=[{"role": "assistant", "content": "  "}]),
        pref(5, preferred_output=[{"role": "user", "content": "10"}]),
        pref(6, non_preferred_output=[{"role": "assistant", "content": "x", "extra": 1}]),
        pref(7, non_preferred_output=[{"role": "assistant", "content": None}]),
        pref(8, non_preferred_output=["b"]),
    ]
    + P[3:6],
    [
        [1, IF, "preferred_output"],
        [2, IF, "non_preferred_output"],
        [6, IF, "preferred_output"],
        [7, IF, "non_preferred_output"],
        [8, IF, "preferred_output[0].content"],
        [9, IF, "preferred_output[0].role"],
        [10, IF, "non_preferred_output[0].extra"],
        [11, IF, "non_preferred_output[0].content"],
        [12, IF, "non_preferred_output[0]"],
    ],
)
case(
    "pref_input_bad",
    [pref(0, input=None), pref(1, input=[U])]
    + P[:4]
    + [
        pref(2, input={"messages": []}),
        pref(3, input={"messages": [{"role": "bot", "content": "q"}]}),
        pref(4, input={"messages": [U, A]}),
        pref(5, input={"messages": [U], "tools": {"type": "function"}}),
        pref(6, input={"prompt": "q"}),
    ]
    + P[4:8],
    [
        [1, IF, "input"],
        [2, IF, "input"],
        [7, IF, "input.messages"],
        [8, IF, "input.messages[0].role"],
        [9, IF, "input.messages[1].role"],
        [10, IF, "input.tools"],
        [11, IF, "input.messages"],
    ],
)
# identical outputs teach nothing; the 2025-06 schema's *_completion spelling is accepted
case(
    "pref_identical",
    P[:3]
    + [pref(3, non_preferred_output=[{"role": "assistant", "content": "6"}])]
    + P[4:8]
    + [
        pref(
            9,
            preferred_output=None,
            non_preferred_output=None,
            preferred_completion=[A],
            non_preferred_completion=B,
        )
    ]
    + P[10:12],
    [[4, IF, "non_preferred_output"]],
)
case("pref_sft_data", G[:10], [[i, IF, None] for i in range(1, 11)])
case("pref_too_few", P[:7], [[None, "invalid_n_examples", None]])
json.dump(cases, open("expected.json", "w"), indent=1)
print(len(cases))
