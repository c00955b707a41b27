"""What the model said, per API: text, tool calls, finish reason and usage, whole or streamed."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.answers.shapes import ChatAnswer, CompletionAnswer, ResponsesAnswer, answer_for


def chat_chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_streamed_chat_text_and_tool_call_argument_deltas() -> None:
    answer = ChatAnswer()
    added = [
        answer.add_event(None, chat_chunk({"role": "assistant", "content": ""})),
        answer.add_event(None, chat_chunk({"content": "Hel"})),
        answer.add_event(None, chat_chunk({"content": "lo"})),
        answer.add_event(
            None,
            chat_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "save", "arguments": '{"a"'},
                        },
                    ]
                }
            ),
        ),
        answer.add_event(
            None, chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
        ),
        answer.add_event(None, chat_chunk({}, "tool_calls")),
        answer.add_event(None, {"choices": [], "usage": {"total_tokens": 9}}),
    ]
    assert added == [0, 3, 2, 8, 4, 0, 0]
    assert answer.chars == sum(added)
    document = answer.document(final=False)
    assert document == {
        "text": "Hello",
        "texts": ["Hello", '{"a": 1}'],
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "save", "arguments": '{"a": 1}'},
            }
        ],
        "finish_reason": "tool_calls",
        "final": False,
        "usage": {"total_tokens": 9},
    }


def test_several_choices_are_all_judged() -> None:
    answer = ChatAnswer()
    answer.add_event(None, chat_chunk({"content": "second"}, index=1))
    answer.add_event(None, chat_chunk({"content": "first"}, index=0))
    assert answer.text == "first\n\nsecond"
    assert answer.document(final=True)["texts"] == ["first", "second"]


def test_whole_chat_answer_with_parts_and_refusal() -> None:
    answer = ChatAnswer()
    answer.add_body(
        {
            "choices": [
                {"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": [{"type": "text", "text": "Hi "},
                                                              {"type": "text", "text": "there"}],
                             "tool_calls": [{"id": "c", "type": "function",
                                             "function": {"name": "f", "arguments": "{}"}}]}},
                {"index": 1, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": None, "refusal": "No."}},
            ],
            "usage": {"prompt_tokens": 1},
        }
    )  # fmt: skip
    assert answer.text == "Hi there\n\nNo."
    assert answer.tool_calls[0]["function"] == {"name": "f", "arguments": "{}"}
    assert answer.finish_reason == "stop" and answer.usage == {"prompt_tokens": 1}


def test_completions_whole_and_streamed() -> None:
    whole = CompletionAnswer()
    whole.add_body({"choices": [{"index": 0, "text": "abc", "finish_reason": "length"}]})
    assert (whole.text, whole.finish_reason) == ("abc", "length")
    streamed = CompletionAnswer()
    assert streamed.add_event(None, {"choices": [{"index": 0, "text": "ab"}]}) == 2
    assert streamed.add_event(None, {"choices": [{"index": 0, "text": "c"}]}) == 1
    assert streamed.text == "abc"


def test_responses_streamed_event_types() -> None:
    answer = ResponsesAnswer()
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "response": {"status": "in_progress"}}),
        ("response.output_text.delta",
         {"type": "response.output_text.delta", "output_index": 0, "delta": "Hi"}),
        ("response.output_item.added",
         {"type": "response.output_item.added", "output_index": 1,
          "item": {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": ""}}),
        ("response.function_call_arguments.delta",
         {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"}),
        ("response.refusal.delta",
         {"type": "response.refusal.delta", "output_index": 2, "delta": "No"}),
    ]  # fmt: skip
    assert [answer.add_event(name, doc) for name, doc in events] == [0, 2, 1, 2, 2]
    assert not answer.ended
    done = {"type": "response.completed", "response": {"status": "completed", "usage": {"x": 1}}}
    assert answer.add_event("response.completed", done) == 0
    assert answer.ended
    document = answer.document(final=True)
    assert document["text"] == "Hi\n\nNo"
    assert document["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    assert (document["finish_reason"], document["usage"]) == ("completed", {"x": 1})


def test_responses_whole_answer() -> None:
    answer = ResponsesAnswer()
    answer.add_body(
        {
            "status": "incomplete",
            "output": [
                {"type": "message", "content": [{"type": "output_text", "text": "Hello"}]},
                {"type": "function_call", "call_id": "c1", "name": "g", "arguments": '{"k": 2}'},
            ],
            "usage": {"output_tokens": 3},
        }
    )
    assert answer.text == "Hello"
    assert answer.tool_calls[0]["function"]["arguments"] == '{"k": 2}'
    assert answer.finish_reason == "incomplete"


def test_texts_are_normalised_as_request_texts_are() -> None:
    answer = ChatAnswer()
    answer.add_event(None, chat_chunk({"content": "\uff22\uff25\uff27\uff29\uff2e\u200b  key\n"}))
    assert answer.document(final=False)["texts"] == ["BEGIN key"]


def test_only_judged_apis_have_answers() -> None:
    assert isinstance(answer_for("responses"), ResponsesAnswer)
    with pytest.raises(ValueError):
        answer_for("embeddings")
