"""Renders the chat templates under Tests/FlexEngineTests/Fixtures/templates with Python's jinja2,
set up as HF transformers' apply_chat_template sets it up (sandboxed, trim_blocks and
lstrip_blocks on, `raise_exception` a global that raises), and writes the expected strings to
expected.json beside them. FlexEngine's JinjaTests compare its interpreter against that file.

Run: python3 -m venv /tmp/jinja-venv && /tmp/jinja-venv/bin/pip install jinja2
     /tmp/jinja-venv/bin/python Tools/template_fixtures.py
"""
import json
import os

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "FlexEngineTests", "Fixtures", "templates")

# Each model's real BOS/EOS text (SmolLM2's from its GGUF; the others from their tokenizer configs).
MODELS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "gemma3": ("<bos>", "<eos>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral": ("<s>", "</s>"),
    "qwen2": ("<|endoftext|>", "<|im_end|>"),
    # Zephyr's template has no `-` at all: it leans on trim_blocks, and keeps the newline after `}}`.
    "zephyr": ("<s>", "</s>"),
}


def m(role, content):
    return {"role": role, "content": content}


TRICKY = "  Grüße, naïve café — 你好 🙂\nsecond line  "
CONVERSATIONS = {
    "full": ([m("system", "You are terse."), m("user", "Hi there"), m("assistant", "Hello!"), m("user", "What is 2+2?")], True),
    "user_only": ([m("user", "Hello")], True),
    "user_assistant": ([m("user", "Hello"), m("assistant", "Hi, how can I help?")], False),
    "tricky": ([m("user", TRICKY)], True),
    "tricky_pair": ([m("user", TRICKY), m("assistant", " \tAnswer with spaces \n")], True),
    "two_users": ([m("user", "first"), m("user", "second")], True),
    "system_user": ([m("system", "  Be kind.\n"), m("user", "Hi")], True),
}


class RaisedError(Exception):
    pass


def raise_exception(message):
    raise TemplateError(message)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    out = {}
    for name, (bos, eos) in MODELS.items():
        with open(os.path.join(HERE, name + ".jinja"), encoding="utf-8") as f:
            template = env.from_string(f.read())
        cases = []
        for cname, (messages, gen) in CONVERSATIONS.items():
            case = {"name": cname, "messages": messages, "add_generation_prompt": gen}
            try:
                case["expected"] = template.render(messages=messages, add_generation_prompt=gen,
                                                   bos_token=bos, eos_token=eos)
            except TemplateError as e:
                case["error"] = str(e)
            cases.append(case)
        out[name] = {"bos_token": bos, "eos_token": eos, "cases": cases}
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
