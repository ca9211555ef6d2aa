from __future__ import annotations

import pydantic
import pytest

from ragtide.builtin.extractive import NOT_FOUND, ExtractiveChatModel
from ragtide.components import ChatModel
from ragtide.prompts import cited_indexes
from ragtide.types import Chunk, Hit, Intent, IntentKind, Prompt

PODS = (
    "Kubernetes groups containers into Pods. A Pod is the smallest deployable unit of "
    "computing that you can create and manage in Kubernetes. Pods share storage and "
    "network resources."
)
LIMITS = (
    "You can set resource limits for each container. When a container exceeds its memory "
    "limit, the kubelet may terminate it. CPU limits are enforced by throttling."
)
BAKING = "Sourdough bread rises slowly. Bakers feed the starter with flour and water every day."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def hit(text: str, score: float = 1.0, title: str = "") -> Hit:
    return Hit(Chunk(id=text[:10], document_id="d", ordinal=0, text=text, title=title), score)


def ask(query: str, *texts: str, kind: IntentKind = "question") -> Prompt:
    hits = [hit(t, score=1.0 / (i + 1)) for i, t in enumerate(texts)]
    return Prompt(query, Intent(kind, query, needs_retrieval=kind == "question"), (), hits)


@pytest.fixture
def model() -> ExtractiveChatModel:
    return ExtractiveChatModel(ExtractiveChatModel.Config())


def test_implements_the_protocol(model: ExtractiveChatModel) -> None:
    assert isinstance(model, ChatModel)
    assert model.model_id == "extractive"


@pytest.mark.anyio
async def test_answers_from_the_hit_that_supports_it(model: ExtractiveChatModel) -> None:
    reply = await model.generate(
        ask("What happens when a container exceeds its memory limit?", BAKING, PODS, LIMITS)
    )
    assert reply.cited == (3,)
    assert "kubelet may terminate it [3]." in reply.text
    assert cited_indexes(reply.text, 3) == reply.cited


@pytest.mark.anyio
async def test_leads_with_the_best_sentence(model: ExtractiveChatModel) -> None:
    reply = await model.generate(
        ask("What is the smallest deployable unit in Kubernetes?", LIMITS, PODS)
    )
    assert reply.text.startswith("A Pod is the smallest deployable unit")
    assert reply.cited[0] == 2


@pytest.mark.anyio
async def test_adds_sentences_for_query_terms_the_best_one_lacks() -> None:
    model = ExtractiveChatModel(ExtractiveChatModel.Config(relative_threshold=0.3))
    reply = await model.generate(
        ask("How are CPU limits and memory limits enforced?", LIMITS, PODS)
    )
    assert "throttling" in reply.text and "terminate" in reply.text
    assert reply.cited == (1,)
    assert reply.text.count("[1]") == 1  # one group, cited once, in document order
    assert reply.text.index("terminate") < reply.text.index("throttling")


@pytest.mark.anyio
async def test_max_sentences_zero_keeps_the_answer_to_one_sentence() -> None:
    model = ExtractiveChatModel(ExtractiveChatModel.Config(max_sentences=0, relative_threshold=0.0))
    reply = await model.generate(ask("How are CPU limits and memory limits enforced?", LIMITS))
    assert reply.text.count(".") == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "prompt",
    [
        ask("What is a Pod?"),  # no hits
        ask("How do I configure TLS certificates for an ingress?", BAKING),
        ask("", PODS),  # nothing to look for
    ],
)
async def test_says_plainly_when_the_documents_lack_the_answer(
    model: ExtractiveChatModel, prompt: Prompt
) -> None:
    reply = await model.generate(prompt)
    assert reply.text == NOT_FOUND and reply.cited == ()


@pytest.mark.anyio
async def test_the_not_found_text_is_configurable() -> None:
    model = ExtractiveChatModel(ExtractiveChatModel.Config(not_found_text="Nope."))
    assert (await model.generate(ask("Who won the match?", BAKING))).text == "Nope."


@pytest.mark.anyio
async def test_min_coverage_decides_when_support_is_too_weak() -> None:
    question = "Which storage class and network plugin do Pods share?"
    lenient = ExtractiveChatModel(ExtractiveChatModel.Config(min_coverage=0.1))
    strict = ExtractiveChatModel(ExtractiveChatModel.Config(min_coverage=0.9))
    assert (await lenient.generate(ask(question, PODS))).cited == (1,)
    assert (await strict.generate(ask(question, PODS))).text == NOT_FOUND


@pytest.mark.anyio
async def test_plurals_and_suffixes_are_folded(model: ExtractiveChatModel) -> None:
    reply = await model.generate(ask("Which limit is throttled?", PODS, LIMITS))
    assert "CPU limits are enforced by throttling [2]." in reply.text


@pytest.mark.anyio
async def test_rank_breaks_ties_between_equal_sentences(model: ExtractiveChatModel) -> None:
    reply = await model.generate(
        ask("When does the kubelet terminate a container?", LIMITS, LIMITS)
    )
    assert reply.cited == (1,)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["greeting", "thanks", "farewell"])
async def test_social_turns_get_a_short_friendly_reply(
    model: ExtractiveChatModel, kind: IntentKind
) -> None:
    reply = await model.generate(ask("hello", PODS, kind=kind))
    assert reply.cited == ()
    assert 0 < len(reply.text) < 80
    assert reply.text != NOT_FOUND


@pytest.mark.anyio
@pytest.mark.parametrize(
    "prompt",
    [
        ask("What happens when a container exceeds its memory limit?", PODS, LIMITS),
        ask("What is a Pod?"),
        ask("hi", kind="greeting"),
    ],
)
async def test_stream_concatenates_to_the_generated_text(
    model: ExtractiveChatModel, prompt: Prompt
) -> None:
    pieces = [piece async for piece in model.stream(prompt)]
    assert "".join(pieces) == (await model.generate(prompt)).text
    assert len(pieces) == len((await model.generate(prompt)).text.split())


@pytest.mark.anyio
async def test_long_sentences_are_cut_around_the_matches() -> None:
    filler = " ".join(f"w{i}" for i in range(100))
    text = f"{filler} the etcd quorum needs a majority of members {filler}."
    model = ExtractiveChatModel(ExtractiveChatModel.Config(max_sentence_words=20))
    reply = await model.generate(ask("How many members does an etcd quorum need?", text))
    assert reply.text.startswith("… ") and reply.text.endswith(" … [1]")
    assert "etcd quorum needs a majority of members" in reply.text
    assert len(reply.text.split()) <= 20 + 3


def test_config_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        ExtractiveChatModel.Config(min_coverage=1.5)
    with pytest.raises(pydantic.ValidationError):
        ExtractiveChatModel.Config(min_answerability=-0.1)
    with pytest.raises(pydantic.ValidationError):
        ExtractiveChatModel.Config.model_validate({"max_sentence": 3})


GUIDE = "Office Guide\n\nBuilding access\n\nThe office opens at 8 am on weekdays. Badges work."


@pytest.mark.anyio
async def test_headings_are_not_glued_to_the_answer(model: ExtractiveChatModel) -> None:
    reply = await model.generate(ask("When does the office open on weekdays?", GUIDE))
    assert reply.text.startswith("The office opens at 8 am on weekdays [1].")


@pytest.mark.anyio
async def test_a_sentence_that_repeats_the_question_is_never_the_answer(
    model: ExtractiveChatModel,
) -> None:
    text = (
        "Send a request: which file formats can I upload to the service today? "
        "Supported file formats for upload are plain text, Markdown, HTML and PDF."
    )
    reply = await model.generate(ask("Which file formats can I upload to the service today?", text))
    assert "which file formats can I upload" not in reply.text


@pytest.mark.anyio
async def test_min_answerability_is_the_decision_threshold() -> None:
    question = "How does a Pod share storage?"
    eager = ExtractiveChatModel(ExtractiveChatModel.Config(min_answerability=0.0))
    never = ExtractiveChatModel(ExtractiveChatModel.Config(min_answerability=1.0))
    assert (await eager.generate(ask(question, PODS))).cited == (1,)
    declined = await never.generate(ask(question, PODS))
    assert declined.text == NOT_FOUND and declined.cited == ()
    reply, answerability = eager.explain(ask(question, PODS))
    assert 0.0 < answerability < 1.0 and reply.cited == (1,)


@pytest.mark.anyio
async def test_stream_yields_word_sized_pieces(model: ExtractiveChatModel) -> None:
    prompt = ask("What happens when a container exceeds its memory limit?", LIMITS)
    pieces = [piece async for piece in model.stream(prompt)]
    assert len(pieces) > 5 and all(len(p.split()) == 1 for p in pieces)


GETTING_STARTED = (
    "Getting started\n\nRagtide answers questions over your own documents. It retrieves the "
    "passages that best match a question and composes an answer from them.\n\nAdding "
    "documents\n\nUpload a file with `curl -F file=@guide.pdf localhost:8000/v1/documents` "
    "or ingest a folder with `ragtide ingest ./docs`. Supported formats are plain text, "
    "Markdown, HTML, PDF, Word (.docx) and JSON Lines."
)


@pytest.mark.anyio
async def test_who_questions_need_a_name_and_code_is_not_one(model: ExtractiveChatModel) -> None:
    reply = await model.generate(ask("Who wrote Ragtide?", GETTING_STARTED))
    assert reply.text == NOT_FOUND and reply.cited == ()


@pytest.mark.anyio
async def test_supported_formats_are_found(model: ExtractiveChatModel) -> None:
    reply = await model.generate(ask("What formats are supported?", GETTING_STARTED))
    assert reply.text.startswith("Supported formats are plain text")
