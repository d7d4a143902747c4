"""Chat templates and the per-task questions and answers of X-SAM's eval prompts (XSAM.md §2, §3).

Every prompt puts the image first (``<image>``, a newline, then the question), so the tokens up to and
including the image marker and the newline after it are the same for every task: :func:`image_prefix`
returns that text, and a caller can prefill it once per image and reuse the KV cache for every question.

Segmentation tasks run in *tensor* mode: the answer (``Sure, it is <SEG>.`` + the template suffix) is appended
to the prompt, so one prefill yields the hidden states at ``<p>…</p>`` and ``<SEG>`` without sampling. GCG and
chat run in *predict* mode: the prompt ends with the assistant header and the model generates.

``<image>`` and ``<region>`` are markers, not vocabulary tokens; the tokenizer maps them to negative ids that
the model splices out. No torch here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from xsam_edge.spec.config import TokenConfig
from xsam_edge.spec.types import (
    CATEGORY_TASKS,
    GENERATE_TASKS,
    PROMPT_TASKS,
    RequestError,
    SegmentationRequest,
    Task,
)

INPUT_FIELD = "{input}"
IMAGE_SEPARATOR = "\n"  # between the image marker and the question; part of the cacheable prefix

GCG_QUESTION = (
    "Can you provide a brief description of the image? "
    "Please respond with interleaved segmentation masks for the corresponding phrases."
)


@dataclass(frozen=True)
class ChatTemplate:
    """How a user turn is wrapped for the LLM (xtuner ``PROMPT_TEMPLATE`` semantics).

    Args:
        name (str): the registry name.
        instruction (str): the user turn with one ``{input}`` field, ending with the assistant header.
        suffix (str): appended after the assistant's answer (acts as EOS in tensor mode).
        stop_words (tuple[str, ...]): generation stops at any of these; the first is the EOS token.
        system (str): text put before the first user turn; empty for X-SAM.
    """

    name: str
    instruction: str
    suffix: str
    stop_words: tuple[str, ...]
    system: str = ""

    def __post_init__(self) -> None:
        if self.instruction.count(INPUT_FIELD) != 1:
            raise ValueError(
                f"template {self.name!r}: instruction must contain {INPUT_FIELD} exactly once, "
                f"got {self.instruction!r}"
            )
        if not self.stop_words:
            raise ValueError(f"template {self.name!r}: at least one stop word is required")

    @property
    def stop_word(self) -> str:
        """The primary stop word: the token whose id is the EOS of generation."""
        return self.stop_words[0]

    def wrap(self, user: str) -> str:
        """The system text plus the user turn with ``user`` in place of ``{input}``.

        ``str.replace`` rather than ``str.format`` so braces in user text are kept as they are.
        """
        return self.system + self.instruction.replace(INPUT_FIELD, user)


PHI3_CHAT = ChatTemplate(
    name="phi3_chat",
    instruction="<|user|>\n{input}<|end|>\n<|assistant|>\n",
    suffix="<|end|>",
    stop_words=("<|end|>",),
)
QWEN_CHAT = ChatTemplate(
    name="qwen_chat",
    instruction="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
    suffix="<|im_end|>",
    stop_words=("<|im_end|>",),
)
# Phi-3's structure with spaces instead of newlines, for word-level tokenizers (decoded text stays readable).
PLAIN = ChatTemplate(
    name="plain",
    instruction="<|user|> {input} <|end|> <|assistant|> ",
    suffix=" <|end|>",
    stop_words=("<|end|>",),
)

TEMPLATES: dict[str, ChatTemplate] = {t.name: t for t in (PHI3_CHAT, QWEN_CHAT, PLAIN)}


def get_template(template: str | ChatTemplate) -> ChatTemplate:
    """The template registered under ``template`` (a :class:`ChatTemplate` passes through).

    Raises:
        ValueError: the name is not registered; the message lists the known names.
    """
    if isinstance(template, ChatTemplate):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(
            f"unknown chat template {template!r}; known templates: {', '.join(sorted(TEMPLATES))}"
        ) from None


def is_generate_task(task: Task | str) -> bool:
    """Whether ``task`` runs in predict mode (generation) rather than one prefill with the answer."""
    return Task(task) in GENERATE_TASKS


def answer_for(task: Task | str, tokens: TokenConfig | None = None) -> str | None:
    """The eval answer appended in tensor mode, without the template suffix.

    Args:
        task (Task | str): the task.
        tokens (TokenConfig | None): special-token spellings; ``None`` means the defaults.

    Returns:
        str | None: ``"Sure, it is <SEG>."`` for referring and reasoning, ``"Sure, <SEG>."`` for the
        category and visual-prompt tasks, ``None`` for GCG and chat (the model generates the answer).
    """
    task = Task(task)
    seg = (tokens or TokenConfig()).seg
    if task in (Task.REFERRING, Task.REASONING):
        return f"Sure, it is {seg}."
    if task in CATEGORY_TASKS or task in PROMPT_TASKS:
        return f"Sure, {seg}."
    return None


def build_question(
    task: Task | str,
    *,
    text: str | None = None,
    categories: Sequence[str] = (),
    num_regions: int = 0,
    tokens: TokenConfig | None = None,
    reserved: Sequence[str] = (),
) -> str:
    """The question for ``task``, without the image marker or the chat template.

    Fields a task does not use are ignored, so a caller may pass every field of a request.

    Args:
        task (Task | str): the task.
        text (str | None): the expression (referring), the question (reasoning), the user message (chat),
            or a replacement for the default GCG question.
        categories (Sequence[str]): class names (panoptic, instance, semantic, open-vocabulary).
        num_regions (int): number of visual prompts K (interactive, visual-grounded); each becomes
            ``<p><region></p>``.
        tokens (TokenConfig | None): special-token spellings; ``None`` means the defaults.
        reserved (Sequence[str]): more strings user text may not hold (the template's markers, the
            tokenizer's special tokens), besides the image, region and added tokens.

    Returns:
        str: the question text.

    Raises:
        ValueError: a field the task needs is missing or empty, or user text contains a special marker.
    """
    task = Task(task)
    tokens = tokens or TokenConfig()
    reserved = (tokens.image, tokens.region, *tokens.added, *reserved)

    def phrase(inner: str) -> str:
        return f"{tokens.phrase_start}{inner}{tokens.phrase_end}"

    if task in (Task.REFERRING, Task.REASONING, Task.CHAT):
        user = _user_text(text, task, reserved)
        if task is Task.REFERRING:
            return (
                f"Can you segment {phrase(user.strip())} in this image? "
                "Please output the corresponding segmentation mask."
            )
        if task is Task.REASONING:
            return f"{phrase(user.strip())} Please output the corresponding segmentation mask."
        return user
    if task in CATEGORY_TASKS:
        names = [_check_reserved(c, "category", reserved).strip() for c in categories]
        if not names or not all(names):
            raise RequestError(
                f"task {task.value!r} needs a list of non-empty category names, got {categories!r}"
            )
        listed = ", ".join(phrase(n) for n in names)
        return (
            f"Can you segment the image based on the following categories: {listed}? "
            "Please output the segmentation masks."
        )
    if task in PROMPT_TASKS:
        if num_regions < 1:
            raise RequestError(
                f"task {task.value!r} needs num_regions >= 1 (one per visual prompt), got {num_regions}"
            )
        listed = ", ".join(phrase(tokens.region) for _ in range(num_regions))
        return (
            f"Can you segment the image based on the following regions: {listed}? "
            "Please output the segmentation masks."
        )
    if task is Task.GCG:
        if text is not None and text.strip():
            return _check_reserved(text, "text", reserved)
        return GCG_QUESTION
    raise AssertionError(f"unhandled task {task}")  # every Task member is covered above


def build_prompt(
    task: Task | str,
    *,
    text: str | None = None,
    categories: Sequence[str] = (),
    num_regions: int = 0,
    template: str | ChatTemplate = "phi3_chat",
    with_answer: bool = True,
    tokens: TokenConfig | None = None,
    reserved: Sequence[str] = (),
) -> str:
    """The full LLM input text for one question: the template around ``<image>``, newline, question.

    In tensor mode the answer and the template suffix follow the assistant header.

    Args:
        task (Task | str): the task.
        text (str | None): see :func:`build_question`.
        categories (Sequence[str]): see :func:`build_question`.
        num_regions (int): see :func:`build_question`.
        template (str | ChatTemplate): a name in :data:`TEMPLATES` or a template value.
        with_answer (bool): append the eval answer and the template suffix (tensor mode). Ignored for GCG
            and chat, which have no fixed answer: their prompt ends with the assistant header.
        tokens (TokenConfig | None): special-token spellings; ``None`` means the defaults.
        reserved (Sequence[str]): see :func:`build_question`; the template's own markers are added here, so
            user text cannot close its turn or open another.

    Returns:
        str: the prompt, with ``<image>`` and ``<region>`` markers; it starts with :func:`image_prefix`.

    Raises:
        ValueError: an unknown template, or a field the task needs is missing (see :func:`build_question`).
    """
    tokens = tokens or TokenConfig()
    chat = get_template(template)
    question = build_question(
        task,
        text=text,
        categories=categories,
        num_regions=num_regions,
        tokens=tokens,
        reserved=(*template_markers(chat), *reserved),
    )
    prompt = chat.wrap(tokens.image + IMAGE_SEPARATOR + question)
    answer = answer_for(task, tokens)
    if with_answer and answer is not None:
        prompt += answer + chat.suffix
    return prompt


def build_request_prompt(
    request: SegmentationRequest,
    *,
    template: str | ChatTemplate = "phi3_chat",
    with_answer: bool = True,
    tokens: TokenConfig | None = None,
    reserved: Sequence[str] = (),
) -> str:
    """:func:`build_prompt` for a ``SegmentationRequest`` (one region per prompt)."""
    return build_prompt(
        request.task,
        text=request.text,
        categories=request.categories,
        num_regions=len(request.prompts),
        template=template,
        with_answer=with_answer,
        tokens=tokens,
        reserved=reserved,
    )


def template_markers(template: str | ChatTemplate) -> tuple[str, ...]:
    """The ``<|...|>`` markers the template spells (``<|user|>``, ``<|end|>``, ``<|im_start|>`` …)."""
    chat = get_template(template)
    spelled = chat.system + chat.instruction + chat.suffix + "".join(chat.stop_words)
    return tuple(sorted(set(re.findall(r"<\|[^<>|]+\|>", spelled))))


def image_prefix(template: str | ChatTemplate = "phi3_chat", tokens: TokenConfig | None = None) -> str:
    """The start of every prompt: the template up to the user input, ``<image>``, and the newline after it.

    The tokenizer encodes text between markers piece by piece, so the ids up to the image marker are a
    prefix of every prompt's ids by construction. The newline after the marker is tokenized on its own too,
    which for the word-level, byte-level BPE and SentencePiece tokenizers used here gives the same ids as
    at the start of the question (tested); a caller caching the KV of this prefix can check
    ``prompt_ids[: len(prefix_ids)] == prefix_ids`` for an unfamiliar tokenizer.

    Args:
        template (str | ChatTemplate): a name in :data:`TEMPLATES` or a template value.
        tokens (TokenConfig | None): special-token spellings; ``None`` means the defaults.

    Returns:
        str: for ``phi3_chat``: ``<|user|>``, newline, ``<image>``, newline.
    """
    chat = get_template(template)
    image = (tokens or TokenConfig()).image
    head = chat.instruction[: chat.instruction.index(INPUT_FIELD)]
    return chat.system + head + image + IMAGE_SEPARATOR


def _user_text(text: str | None, task: Task, reserved: tuple[str, ...]) -> str:
    """``text`` checked to be non-empty and free of special markers."""
    if text is None or not text.strip():
        raise RequestError(f"task {task.value!r} needs a non-empty text")
    return _check_reserved(text, "text", reserved)


def _check_reserved(value: str, field_name: str, reserved: tuple[str, ...]) -> str:
    """``value`` unchanged, or ValueError if it contains a special marker the prompt owns."""
    found = [m for m in reserved if m in value]
    if found:
        raise RequestError(
            f"{field_name} {value!r} contains the reserved marker(s) {found}; the prompt builder inserts "
            "these itself, remove them from the input"
        )
    return value
