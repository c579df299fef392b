"""A model folder's chat template: found, compiled in transformers' sandbox, rendered under a
budget. The template is untrusted code: nothing in it may reach Python objects, files, the
network, or run without end.

The template is the folder's ``chat_template.jinja`` (transformers' priority), else the
``chat_template`` of its ``tokenizer_config.json`` (a string, or named templates: the
``default`` one). It is compiled by transformers' own sandbox (`_compile_jinja_template`: an
``ImmutableSandboxedEnvironment`` with ``trim_blocks``, ``lstrip_blocks``, its ``{%
generation %}`` tracker, ``raise_exception``, ``tojson``), then once more in an overlay of that
environment that adds the limits below, and rendered as ``apply_chat_template`` renders it
(messages normalised by transformers' own functions; the tokenizer's special tokens as
variables; assistant spans as `_render_with_assistant_indices` records them).

What the sandbox leaves to its caller is bounded here, the same on every machine:
- steps: at most `MAX_STEPS` loop iterations and calls of template code per conversation (a
  loop in a loop; jinja's generated Python counts them: `_Steps`);
- sizes: ``*``, ``**`` and ``%`` refuse results past `MAX_ITEMS` elements or `MAX_BITS` bits,
  and every filter refuses a number argument past `MAX_ITEMS` (``center(10**10)``);
- memory: the process's peak may grow by at most `MAX_GROWTH` bytes during one conversation.
A template past a limit, or one that raises, is a `RenderError` (the caller names the row).
Includes and imports find nothing: the environment has no loader.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

from evalloss.errors import DataError, shown

TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"
SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
           "mask_token")  # fmt: skip  # transformers' SPECIAL_TOKENS_ATTRIBUTES
GENERATION = re.compile(r"\{\%-?\s*generation\s*-?\%\}")  # transformers' own test
MAX_STEPS = 100_000  # loop iterations and calls of template code for one conversation
MAX_ITEMS = 1 << 20  # characters or elements a *, % or a filter's number may ask for
MAX_BITS = 1 << 16  # an integer a template computes
MAX_GROWTH = 1 << 30  # bytes the process's peak memory may grow by, rendering one conversation
_CONVERSION = re.compile(r"%[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


class RenderError(Exception):
    """The template raised, refused its input, or went past a limit: ``why`` says which."""


@dataclass(frozen=True)
class ChatTemplate:
    """A folder's chat template, compiled with the limits; its special tokens."""

    path: str  # the file it is read from
    source: str
    tokens: dict[str, str]  # bos_token, eos_token, ...: the template's variables
    compiled: Any = field(compare=False, repr=False)

    @property
    def generation(self) -> bool:
        """Whether the template marks what the assistant writes (``{% generation %}``)."""
        return GENERATION.search(self.source) is not None

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False
               ) -> tuple[str, list[tuple[int, int]]]:  # fmt: skip
        """The conversation's text and the character spans of its generation blocks."""
        from transformers.utils import chat_template_utils as chat

        try:
            plain = chat._plain_template_data(chat._normalize_chat_messages(messages))
            plain = chat._alias_reasoning_fields(plain)
            kwargs = chat._plain_template_data(dict(self.tokens))
            with _Budget():  # counted by the compiled template (`_Steps`)
                text, spans = chat._render_with_assistant_indices(  # type: ignore[no-untyped-call]
                    self.compiled, plain, None, None, add_generation_prompt, **kwargs
                )
        except RenderError:
            raise
        except MemoryError:
            raise RenderError("the chat template ran out of memory") from None
        except Exception as exc:  # a template's own error, the sandbox's, or a bad value
            raise RenderError(f"the chat template failed: {_first(exc)}") from exc
        return text, [(int(a), int(b)) for a, b in spans]


def files(tokenizer: str) -> list[str]:
    """The files beside ``tokenizer`` (a ``tokenizer.json``) that the template and its
    special tokens are read from, those that exist."""
    folder = Path(tokenizer).parent
    names = (TEMPLATE_FILE, CONFIG_FILE, SPECIAL_MAP_FILE)
    return [str(folder / n) for n in names if (folder / n).is_file()]


def find(tokenizer: str) -> ChatTemplate | None:
    """The chat template of the folder of ``tokenizer``, compiled; None where it has none."""
    folder = Path(tokenizer).parent
    config = _json(folder / CONFIG_FILE)
    jinja = folder / TEMPLATE_FILE
    path = str(jinja if jinja.is_file() else folder / CONFIG_FILE)
    source = _read(jinja) if jinja.is_file() else _chosen(config.get("chat_template"),
                                                          folder / CONFIG_FILE)  # fmt: skip
    if source is None:
        return None
    return ChatTemplate(path, source, special_tokens(folder, config), _compiled(path, source))


def special_tokens(folder: Path, config: dict[str, Any] | None = None) -> dict[str, str]:
    """The named special tokens (``bos_token``, ``eos_token``, ...) as strings: the tokenizer
    config's, else ``special_tokens_map.json``'s."""
    config = _json(folder / CONFIG_FILE) if config is None else config
    fallback = _json(folder / SPECIAL_MAP_FILE)
    found = {}
    for name in SPECIAL:
        value = config.get(name, fallback.get(name))
        if isinstance(value, dict):  # an AddedToken, saved as {"content": ...}
            value = value.get("content")
        if isinstance(value, str):
            found[name] = value
    return found


def _chosen(value: Any, path: Path) -> str | None:
    """A config's ``chat_template``: a string, or named templates (the ``default``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        named = {t.get("name"): t.get("template") for t in value}
        if isinstance(named.get("default"), str):
            return str(named["default"])
        raise DataError("the chat templates here have no 'default' one (named: "
                        + ", ".join(shown(n, 30) for n in list(named)[:5]) + ")", path=str(path),
                        key="chat_template")  # fmt: skip
    raise DataError(f"chat_template is {type(value).__name__}, not a template", path=str(path),
                    key="chat_template")  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read it ({exc})", path=str(path)) from exc


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(_read(path))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"cannot read it as JSON ({str(exc)[:80]})", path=str(path)) from exc
    return value if isinstance(value, dict) else {}


def _compiled(path: str, source: str) -> Any:
    """transformers' sandboxed template, compiled again in an overlay with the limits."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError as exc:
        raise DataError(f"chat templates need transformers and jinja2 ({exc})", path=path) from exc
    try:
        # the sandbox of an empty template: the source is compiled only with the limits (jinja
        # folds constants while compiling: ``'a' * 10**10`` would be computed right there)
        sandbox = _compile_jinja_template("").environment
        limited = sandbox.overlay()
        limited.intercepted_binops = frozenset({"*", "**", "%"})
        limited.binop_table = {**limited.binop_table, "*": _times, "**": _power, "%": _modulo}
        limited.filters = {name: _bounded(f) for name, f in sandbox.filters.items()}
        limited.filters["format"] = _format(sandbox.filters["format"])
        limited.step = _step
        limited._compile = _instrumented
        return limited.from_string(source)
    except Exception as exc:  # a syntax error, an unknown tag; jinja2 too old
        raise DataError(f"cannot compile the chat template ({_first(exc)})", path=path,
                        key="chat_template") from exc  # fmt: skip


def _big(value: Any) -> bool:
    return type(value) is int and abs(value) > MAX_ITEMS


def _times(left: Any, right: Any) -> Any:
    sized = [v for v in (left, right) if isinstance(v, str | list | tuple)]
    counts = [v for v in (left, right) if type(v) is int]
    if sized and counts and len(sized[0]) * max(counts[0], 0) > MAX_ITEMS:
        raise RenderError(f"the chat template asks for more than {MAX_ITEMS} characters")
    if len(counts) == 2 and left.bit_length() + right.bit_length() > MAX_BITS:
        raise RenderError("the chat template computes too large a number")
    return left * right


def _power(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int and abs(left) > 1 and (
        right * max(left.bit_length(), 1) > MAX_BITS
    ):
        raise RenderError("the chat template computes too large a number")
    return left**right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_conversions(left)
    return left % right


def _check_conversions(text: str) -> None:
    """A ``%`` format whose width or precision would be past the limit (or given by ``*``)."""
    for match in _CONVERSION.finditer(text):
        for part in match.groups():
            if part == "*" or (part is not None and int(part) > MAX_ITEMS):
                raise RenderError("the chat template asks for too wide a format")


def _bounded(f: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that refuses a number argument past the limit (the filtered value aside)."""

    skip = 2 if hasattr(f, "jinja_pass_arg") else 1  # a context or environment, the value

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(_big(v) for v in (*args[skip:], *kwargs.values())):
            raise RenderError(f"the chat template gives a filter a number past {MAX_ITEMS}")
        return f(*args, **kwargs)

    return wrapper


def _format(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_conversions(str(value))
        return f(value, *args, **kwargs)

    return wrapper


class _Budget:
    """One conversation's budget: its steps left and the peak memory it may reach."""

    def __init__(self) -> None:
        self.left = MAX_STEPS
        self.limit = _peak() + MAX_GROWTH
        self.token: Any = None

    def __enter__(self) -> None:
        self.token = _ACTIVE.set(self)

    def __exit__(self, *_: object) -> None:
        _ACTIVE.reset(self.token)


_ACTIVE: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


def _step() -> None:
    """Called by the compiled template at every loop iteration and function call."""
    budget = _ACTIVE.get()
    if budget is None:
        raise RenderError("the chat template ran outside a render")
    budget.left -= 1
    if budget.left < 0:
        raise RenderError(f"the chat template ran past {MAX_STEPS} steps")
    if _peak() > budget.limit:
        raise RenderError(f"the chat template took more than {MAX_GROWTH >> 20} MiB")


class _Steps(ast.NodeTransformer):
    """Jinja's generated Python with ``environment.step()`` first in every loop body and
    function (a macro, a block, a recursive loop, the root): no step of a template's own
    goes uncounted."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(node, _COUNTED):
            call = ast.Call(ast.Attribute(ast.Name("environment", ast.Load()), "step",
                                          ast.Load()), [], [])  # fmt: skip
            node.body.insert(0, ast.Expr(call))
        return node


_COUNTED = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef)


def _instrumented(source: str, filename: str) -> CodeType:
    """The environment's ``_compile``: jinja's generated source, every step counted."""
    tree = ast.fix_missing_locations(_Steps().visit(ast.parse(source, filename)))
    return compile(tree, filename, "exec")


def _peak() -> int:
    """The process's peak resident memory, in bytes (Linux counts KiB, macOS bytes; 0 where
    the system does not say: Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _first(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return shown(text, 160)
