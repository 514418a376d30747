"""The five providers' documented limits and shapes, as data.

Every value below comes from the provider's own page in ``shared/upstream-docs/`` (cited as
``file:line``). Where a page is silent the value is OpenAI's published behaviour, marked
``OpenAI (page silent)``, per UPSTREAMS.md:6-7 ("treat it as OpenAI's behaviour and do not invent
a limit"). Nothing here may be imported from, or shared with, the gateway's own profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, NamedTuple, Protocol

JsonObj = dict[str, Any]


class Range(NamedTuple):
    lo: float
    hi: float | None  # None: no upper bound


# OpenAI's own limits, used where a page documents the field but no limit.
OPENAI_TEMPERATURE = Range(0, 2)
OPENAI_TOP_P = Range(0, 1)
OPENAI_MAX_TOKENS = Range(1, None)
OPENAI_STOP_MAX = 4
OPENAI_TOOLS_MAX = 128
OPENAI_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
OPENAI_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file"})
OPENAI_TOOL_TYPES = frozenset({"function", "custom"})
OPENAI_TOOL_CHOICES = frozenset({"none", "auto", "required"})

# Fields no page documents for every provider: a gateway must rewrite or drop them.
FOREIGN_EVERYWHERE = ("reasoning_effort", "max_completion_tokens", "stream_options")
# Body fields outside OpenAI's API that only one page documents: siliconflow.txt:129-170 (min_p,
# top_k). Sent to another provider, they are another dialect's fields.
DIALECT_EXTRAS = frozenset({"min_p", "top_k"})

Code = int | str


class ErrorBuilder(Protocol):
    """A provider's error body; ``code`` (the error_code knob) replaces the shape's own code."""

    def __call__(
        self, status: int, message: str | None, field_name: str | None, code: Code | None = None
    ) -> JsonObj: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    stream_default: bool
    temperature: Range
    top_p: Range
    max_tokens: Range
    stop_string_ok: bool
    stop_max: int
    messages_max: int | None
    needs_user_like: bool  # at least one message that is not system/assistant
    roles: frozenset[str]
    part_types: frozenset[str] | None  # None: content must be a plain string
    null_content_ok: bool  # assistant message with tool_calls and content null
    tool_types: frozenset[str]
    tools_max: int
    tool_choice_strings: frozenset[str]
    tool_choice_object_ok: bool
    thinking: Literal["zhipu", "siliconflow"] | None
    error: ErrorBuilder
    thinks_by_default: bool = False  # reasoning when the request says nothing (the page's example)
    own_extras: frozenset[str] = frozenset()  # DIALECT_EXTRAS this page documents
    extra_ranges: dict[str, tuple[Range, bool]] = field(default_factory=dict)  # name: (range, int only)
    enable_thinking_models: frozenset[str] = frozenset()
    model_alias: dict[str, str] = field(default_factory=dict)
    cached_tokens: bool = False
    siliconflow_usage: bool = False
    trace_header: bool = False
    content_policy: bool = False  # "[unsafe]" in any message -> the provider's policy rejection
    response_extras: JsonObj = field(default_factory=dict)


# ---- error shapes (distinct on purpose: the gateway's error mapping must be generic) ----------

# Not on the pages: Zhipu's public error codes, for realism (1210 = invalid parameter).
_ZHIPU_CODES = {400: "1210", 401: "1000", 403: "1220", 429: "1302", 500: "500"}
_ZHIPU_TEXT = {
    400: "Invalid API parameter, please check the documentation.",
    401: "Authentication failed: invalid or missing API key.",
    403: "You do not have permission to access this API.",
    429: "Rate limit reached for requests, please retry later.",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def zhipu_error(status: int, message: str | None, field_name: str | None, code: Code | None = None) -> JsonObj:
    # Zhipu's codes are strings, so an integer code is given as one too.
    text = _ZHIPU_CODES.get(status, str(status)) if code is None else str(code)
    return {"error": {"code": text, "message": message or _ZHIPU_TEXT.get(status, _phrase(status))}}


def siliconflow_error(status: int, message: str | None, field_name: str | None, code: Code | None = None) -> JsonObj:
    if code is None:  # 20015 is SiliconFlow's "parameter is invalid"; other statuses carry the status
        code = 20015 if status == 400 else status
    return {"code": code, "message": message or _phrase(status), "data": None}


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str | None, field_name: str | None, code: Code | None = None) -> JsonObj:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message or _phrase(status), "type": kind, "param": field_name, "code": code}}


# maxtoken.txt:157-165, the page's own wording for each documented status.
_MAXTOKEN_TEXT = {
    401: "API key is missing or invalid",
    403: "Your API key doesn't have permission to access this resource, "
    "or insufficient balance for the requested operation",
    429: "You've exceeded your rate limit",
    500: "An internal server error occurred",
}


def maxtoken_error(status: int, message: str | None, field_name: str | None, code: Code | None = None) -> JsonObj:
    text = message or _MAXTOKEN_TEXT.get(status, _phrase(status))
    return {"error": {"code": status if code is None else code, "message": text}}


# maxtoken.txt:165 "503 | Content policy violation | ... (actual status code is 400)".
MAXTOKEN_POLICY_STATUS = 400
MAXTOKEN_POLICY_BODY: JsonObj = {
    "error": {
        "code": 503,
        "type": "content_policy_violation",
        "message": "Content policy violation: content blocked due to safety concerns",
    }
}
UNSAFE_MARKER = "[unsafe]"


# ---- the five dialects -------------------------------------------------------------------------

POWERTOKENS = Dialect(
    name="powertokens",
    stream_default=True,  # powertokens.txt:90-94 "stream boolean default:true"
    temperature=Range(0, 1),  # powertokens.txt:105-107 "0 <= x <= 1"
    top_p=Range(0.01, 1),  # powertokens.txt:112-114 "0.01 <= x <= 1"
    max_tokens=Range(1, 131072),  # powertokens.txt:118-120 "1 <= x <= 131072"
    stop_string_ok=False,  # powertokens.txt:121-122 "stop string[]"
    stop_max=1,  # powertokens.txt:124-126 "only a single stop sequence ... Maximum array length: 1"
    messages_max=None,  # powertokens.txt:89 "Minimum array length: 1", no maximum
    needs_user_like=True,  # powertokens.txt:87 "at least one message that is not system or assistant"
    roles=OPENAI_ROLES,  # OpenAI (page silent on roles)
    part_types=frozenset({"text", "image_url"}),  # powertokens.txt:87 "plain text ... image_url content parts"
    null_content_ok=True,  # OpenAI (page silent)
    tool_types=frozenset({"function"}),  # powertokens.txt:130 "only function type tools"
    tools_max=128,  # powertokens.txt:132 "Maximum array length: 128"
    tool_choice_strings=frozenset({"auto"}),  # powertokens.txt:134-140 enum, "only exposes auto"
    tool_choice_object_ok=False,  # powertokens.txt:134 "tool_choice enum<string>"
    thinks_by_default=True,  # powertokens.txt:13-28 asks nothing of thinking, :41 answers reasoning_content
    # powertokens.txt:96-99 "thinking object"; the body is Zhipu's (powertokens.txt:69), whose
    # values token360.txt:67 lists: enabled / disabled / auto.
    thinking="zhipu",
    error=zhipu_error,  # Zhipu-style body (powertokens.txt:69 "Zhipu Chat Completions request body")
    model_alias={"glm-4.7-flash": "glm-5"},  # powertokens.txt:15 asks glm-4.7-flash, :34 answers glm-5
    cached_tokens=True,  # powertokens.txt:50-52 usage.prompt_tokens_details.cached_tokens
)

TOKEN360 = Dialect(
    name="token360",
    stream_default=False,  # token360.txt:53 "streambooleandefault:false"
    temperature=OPENAI_TEMPERATURE,  # token360.txt:43 default only; OpenAI (page silent on range)
    top_p=OPENAI_TOP_P,  # token360.txt:57 default only; OpenAI range
    max_tokens=OPENAI_MAX_TOKENS,  # token360.txt:49-51 no range; OpenAI
    stop_string_ok=True,  # token360.txt:61 "stopstring | string[]"
    stop_max=OPENAI_STOP_MAX,  # OpenAI (page silent on count)
    messages_max=None,
    needs_user_like=False,
    roles=frozenset({"system", "user", "assistant", "tool"}),  # token360.txt:25-29
    part_types=None,  # token360.txt:31-33 "messages.contentstringrequired ... Text content"
    null_content_ok=False,  # token360.txt:31 content is a required string, also on assistant turns
    tool_types=OPENAI_TOOL_TYPES,  # token360.txt:73-75 no type restriction; OpenAI
    tools_max=OPENAI_TOOLS_MAX,  # OpenAI (page silent)
    tool_choice_strings=OPENAI_TOOL_CHOICES,  # token360.txt:77 "string | object"
    tool_choice_object_ok=True,  # token360.txt:77
    thinking="zhipu",  # token360.txt:65-67 {"type": "enabled" | "disabled" | "auto"}
    error=zhipu_error,
)

# siliconflow.txt:100-113 "This field supports the following models".
_SF_THINKING_MODELS = frozenset(
    {
        "Pro/zai-org/GLM-4.7",
        "deepseek-ai/DeepSeek-V3.2",
        "Pro/deepseek-ai/DeepSeek-V3.2",
        "zai-org/GLM-4.6",
        "Qwen/Qwen3-8B",
        "Qwen/Qwen3-14B",
        "Qwen/Qwen3-32B",
        "Qwen/Qwen3-30B-A3B",
        "tencent/Hunyuan-A13B-Instruct",
        "zai-org/GLM-4.5V",
        "deepseek-ai/DeepSeek-V3.1-Terminus",
        "Pro/deepseek-ai/DeepSeek-V3.1-Terminus",
    }
)

SILICONFLOW = Dialect(
    name="siliconflow",
    stream_default=False,  # siliconflow.txt:79-86 no default ("Example: false"); OpenAI
    temperature=OPENAI_TEMPERATURE,  # siliconflow.txt:147-154 no range; OpenAI
    top_p=OPENAI_TOP_P,  # siliconflow.txt:156-164 no range; OpenAI
    max_tokens=OPENAI_MAX_TOKENS,  # siliconflow.txt:88-91 bound is the model's window, not listed
    stop_string_ok=True,  # siliconflow.txt:139 no type given; OpenAI (string or array)
    stop_max=4,  # siliconflow.txt:141 "Up to 4 sequences"
    messages_max=10,  # siliconflow.txt:78 "Required array length: 1 - 10 elements"
    needs_user_like=False,
    roles=OPENAI_ROLES,  # OpenAI (page silent)
    part_types=OPENAI_PART_TYPES,  # OpenAI (page silent)
    null_content_ok=True,
    tool_types=frozenset({"function"}),  # siliconflow.txt:195 "only functions are supported"
    tools_max=128,  # siliconflow.txt:195 "A max of 128 functions"
    tool_choice_strings=OPENAI_TOOL_CHOICES,  # OpenAI (page silent)
    tool_choice_object_ok=True,
    thinking="siliconflow",  # siliconflow.txt:97-127 enable_thinking / thinking_budget
    error=siliconflow_error,
    extra_ranges={
        "thinking_budget": (Range(128, 32768), True),  # siliconflow.txt:118-124
        "min_p": (Range(0, 1), False),  # siliconflow.txt:129-134
    },
    enable_thinking_models=_SF_THINKING_MODELS,
    # siliconflow.txt:11-17 asks nothing of thinking of Pro/zai-org/GLM-4.7; :29 and :39 reason
    thinks_by_default=True,
    own_extras=DIALECT_EXTRAS,  # siliconflow.txt:129-170 min_p, top_k
    siliconflow_usage=True,  # siliconflow.txt:34-47 usage extras
    trace_header=True,  # siliconflow.txt:199 x-siliconcloud-trace-id
    response_extras={"system_fingerprint": ""},  # siliconflow.txt:47
)

TOAPIS = Dialect(
    name="toapis",
    stream_default=False,  # toapis.txt:75-80 "默认值:false"
    temperature=Range(0, 2),  # toapis.txt:84-89 "Range: 0 to 2"
    top_p=Range(0, 1),  # toapis.txt:90-93 "Range: 0 to 1"
    max_tokens=OPENAI_MAX_TOKENS,  # toapis.txt:82-83 no range
    stop_string_ok=True,  # toapis.txt:95 "string | string[]"
    stop_max=4,  # toapis.txt:96 "Maximum 4 stop sequences"
    messages_max=None,
    needs_user_like=False,
    roles=OPENAI_ROLES,  # OpenAI (page silent)
    part_types=frozenset({"text"}),  # toapis.txt:54 "Text-only input; vision input (images) is not supported"
    null_content_ok=True,
    tool_types=OPENAI_TOOL_TYPES,  # OpenAI (page silent on tools)
    tools_max=OPENAI_TOOLS_MAX,
    tool_choice_strings=OPENAI_TOOL_CHOICES,
    tool_choice_object_ok=True,
    thinking=None,  # no thinking field on toapis.txt
    error=openai_error,
)

MAXTOKEN = Dialect(
    name="maxtoken",
    stream_default=False,  # maxtoken.txt:132 "stream | boolean | ... | false"
    temperature=Range(0, 1),  # maxtoken.txt:130 "0.0 - 1.0"
    top_p=Range(0, 1),  # maxtoken.txt:131 "0.0 - 1.0"
    max_tokens=OPENAI_MAX_TOKENS,  # maxtoken.txt:129 no range
    stop_string_ok=False,  # maxtoken.txt:134 "stop | array" (content, by contrast, is "string / array")
    stop_max=4,  # maxtoken.txt:134 "Up to 4 sequences"
    messages_max=None,
    needs_user_like=False,
    roles=frozenset({"system", "user", "assistant"}),  # maxtoken.txt:117 "systemuserassistant"
    part_types=frozenset({"text", "image_url", "file"}),  # maxtoken.txt:118-125 "textimage_urlfile"
    null_content_ok=False,  # maxtoken.txt:118 messages.content "✅ Yes" required
    tool_types=frozenset({"function", "web_search"}),  # maxtoken.txt:133 "web search or function calling"
    tools_max=OPENAI_TOOLS_MAX,
    tool_choice_strings=OPENAI_TOOL_CHOICES,
    tool_choice_object_ok=True,
    thinking=None,  # no thinking field on maxtoken.txt
    error=maxtoken_error,
    content_policy=True,  # maxtoken.txt:165 "503 Content policy violation ... (actual status code is 400)"
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (POWERTOKENS, TOKEN360, SILICONFLOW, TOAPIS, MAXTOKEN)}


def thinking_on(dialect: Dialect, body: JsonObj) -> bool:
    """Reasoning is on when the request asks for it in the provider's own dialect, or says nothing
    to a provider whose page shows reasoning by default (siliconflow: for the models that switch)."""
    if dialect.thinking == "zhipu":
        thinking = body.get("thinking")
        if thinking is None:
            return dialect.thinks_by_default
        return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "auto")
    if dialect.thinking == "siliconflow":
        enable = body.get("enable_thinking")
        if enable is None:
            return dialect.thinks_by_default and body.get("model") in dialect.enable_thinking_models
        return enable is True
    return False
