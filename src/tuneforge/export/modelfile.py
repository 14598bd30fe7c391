"""An Ollama `Modelfile` whose TEMPLATE renders conversations exactly as the trained chat template.

The Jinja template is probed, not parsed: rendering conversations of sentinel strings shows each
turn as `HEAD_OPEN + role + HEAD_CLOSE + content + FOOT` (ChatML, and templates shaped like it),
plus an optional preamble and a default system prompt used when none is given (SmolLM2's). The
Go template built from those parts is then checked against the Jinja template on more
conversations (multi-turn, whitespace around content); anything it cannot reproduce exactly is
refused with the reason, before any file is written. Tool calls are not part of the TEMPLATE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import InvalidRequest

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> text
S, U1, A1, U2, A2, U3 = "SYSTEMQ7X", "USERQ7X1", "ASSISTANTQ7X1", "USERQ7X2", "ASSISTANTQ7X2", "USERQ7X3"


@dataclass(frozen=True)
class TurnFormat:
    preamble: str
    head_open: str
    head_close: str
    foot: str
    default_system: str | None

    def turn(self, role: str, content: str) -> str:
        return f"{self.head_open}{role}{self.head_close}{content}{self.foot}"

    def render(self, messages: list[dict]) -> str:
        """What the Go template renders for `messages` (always with the generation prompt)."""
        text = self.preamble
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            text += self.turn("system", self.default_system)
        for m in messages:
            text += self.turn(m["role"], m["content"])
        return text + f"{self.head_open}assistant{self.head_close}"

    def go_template(self) -> str:
        text = self.preamble
        if self.default_system is not None:
            text += (
                '{{ if ne (index .Messages 0).Role "system" }}'
                + self.turn("system", self.default_system)
                + "{{ end }}"
            )
        text += (
            "{{ range .Messages }}"
            + self.head_open
            + "{{ .Role }}"
            + self.head_close
            + "{{ .Content }}"
            + self.foot
            + "{{ end }}"
        )
        return text + f"{self.head_open}assistant{self.head_close}"


def _unsupported(reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"Cannot write an Ollama TEMPLATE for this model's chat template: "
        f"{reason}. Export as `merged` or `peft` instead.",
        param="format",
        code="unsupported_chat_template",
    )


def _split(text: str, marks: list[str]) -> list[str]:
    parts = []
    for mark in marks:
        if text.count(mark) != 1:
            raise _unsupported(f"a message's content is not rendered exactly once ({mark!r})")
        before, text = text.split(mark)
        parts.append(before)
    return parts + [text]


def derive(render: Render) -> TurnFormat:
    convo = [
        {"role": "system", "content": S},
        {"role": "user", "content": U1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": U2},
    ]
    try:
        no_prompt = render([{"role": "user", "content": U1}, {"role": "assistant", "content": A1}], False)
        p0, p1, p2, p3, p4 = _split(render(convo, True), [S, U1, A1, U2])
        alone = render([{"role": "user", "content": U1}], True)
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - any Jinja error: a template that fails on plain chats
        raise _unsupported(f"it fails on a plain conversation ({exc})") from None
    foot = no_prompt.split(A1, 1)[-1]
    if not foot or not p1.startswith(foot) or "user" not in p1[len(foot) :]:
        raise _unsupported("turns are not framed as <open>role<close>content<end>")
    head_open, head_close = p1[len(foot) :].split("user", 1)
    fmt = TurnFormat("", head_open, head_close, foot, None)
    sys_head = f"{head_open}system{head_close}"
    if p2 != foot + head_open + "assistant" + head_close or p3 != p1 or p4 != p2 or not p0.endswith(sys_head):
        raise _unsupported("turns are not framed as <open>role<close>content<end>")
    preamble = p0[: -len(sys_head)]
    fmt = TurnFormat(preamble, head_open, head_close, foot, None)
    expected = fmt.render([{"role": "user", "content": U1}])
    if alone != expected:
        start = preamble + sys_head
        rest = fmt.render([{"role": "user", "content": U1}])[len(preamble) :]
        if not (alone.startswith(start) and alone.endswith(foot + rest)):
            raise _unsupported("the first turn without a system message is rendered differently")
        fmt = TurnFormat(
            preamble, head_open, head_close, foot, alone[len(start) : len(alone) - len(foot + rest)]
        )
    _verify(fmt, render)
    literal = [fmt.preamble, fmt.head_open, fmt.head_close, fmt.foot, fmt.default_system or ""]
    if any("{{" in part or '"""' in part for part in literal):
        raise _unsupported("its text contains Go template or Modelfile delimiters")
    return fmt


def _verify(fmt: TurnFormat, render: Render) -> None:
    conversations = [
        [{"role": "user", "content": " Padded,\nmulti-line question? "}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "user", "content": U1},
            {"role": "assistant", "content": A1},
            {"role": "user", "content": U2},
            {"role": "assistant", "content": A2},
            {"role": "user", "content": U3},
        ],
    ]
    for messages in conversations:
        if render(messages, True) != fmt.render(messages):
            raise _unsupported(
                "it renders a multi-turn or whitespace-padded conversation in a way "
                "the Go template cannot reproduce"
            )


def modelfile(fmt: TurnFormat, stops: list[str], gguf_name: str = "model.gguf") -> str:
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{fmt.go_template()}"""']
    for stop in stops:
        lines.append("PARAMETER stop " + '"' + stop.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "\n".join(lines) + "\n"


def parse_template(text: str) -> str:
    """The TEMPLATE of a Modelfile written by `modelfile` (for tests and tools)."""
    return text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
