"""A tiny renderer for the Go-template subset tuneforge writes into Ollama Modelfiles, written
independently of export/modelfile.py so that the tests check its output, not re-run its code:
literal text, `{{ range .Messages }}…{{ end }}`, `{{ .Role }}`, `{{ .Content }}` and
`{{ if ne (index .Messages 0).Role "system" }}…{{ end }}`."""

from __future__ import annotations

import re

TOKEN = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def _parse(text: str):
    """-> a list of nodes: str | ("var", name) | ("range", body) | ("if_not_system", body)."""
    nodes, stack = [], []
    pos = 0
    for m in TOKEN.finditer(text):
        if m.start() > pos:
            nodes.append(text[pos : m.start()])
        action = m.group(1).strip()
        pos = m.end()
        if action == "range .Messages":
            stack.append(("range", nodes))
            nodes = []
        elif action == 'if ne (index .Messages 0).Role "system"':
            stack.append(("if_not_system", nodes))
            nodes = []
        elif action == "end":
            kind, outer = stack.pop()
            outer.append((kind, nodes))
            nodes = outer
        elif action in (".Role", ".Content"):
            nodes.append(("var", action[1:].lower()))
        else:
            raise ValueError(f"unsupported action {action!r}")
    if stack:
        raise ValueError("unclosed block")
    return nodes + ([text[pos:]] if pos < len(text) else [])


def render(template: str, messages: list[dict]) -> str:
    def run(nodes, message=None) -> str:
        out = ""
        for node in nodes:
            if isinstance(node, str):
                out += node
            elif node[0] == "var":
                out += message[node[1]]
            elif node[0] == "range":
                out += "".join(run(node[1], m) for m in messages)
            elif node[0] == "if_not_system" and messages[0]["role"] != "system":
                out += run(node[1], message)
        return out

    return run(_parse(template))
