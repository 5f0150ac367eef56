"""The typed task services: fill-mask, next-sentence, sentiment, question answering.

Each servicer turns its request into task inputs and the outputs into its
response, and nothing else. An option left 0 on the wire is left out of the
task input, so the task definition's default applies (`bertserve.plugin.tasks`,
the one place the defaults live; the `.proto` comments state them too).
"""

from __future__ import annotations

import grpc
from bertserve_client.v1 import (
    fill_mask_pb2,
    fill_mask_pb2_grpc,
    next_sentence_pb2,
    next_sentence_pb2_grpc,
    question_answering_pb2,
    question_answering_pb2_grpc,
    sentiment_pb2,
    sentiment_pb2_grpc,
)

from bertserve.plugin.service import InputFields
from bertserve.plugin.tasks import (
    FillMaskInput,
    NextSentenceInput,
    QuestionAnsweringInput,
    TextClassificationInput,
)
from bertserve.runtime.runner import Runtime

FILL_MASK_FIELDS = InputFields("texts", text="text", options=frozenset({"top_k", "targets", "truncate"}))
NEXT_SENTENCE_FIELDS = InputFields("pairs", options=frozenset({"truncate"}))
SENTIMENT_FIELDS = InputFields("texts", text="text", options=frozenset({"truncate"}))
QA_FIELDS = InputFields("inputs", options=frozenset({"top_k", "max_answer_length", "doc_stride", "allow_no_answer"}))
_NO_ANSWER = {
    question_answering_pb2.NO_ANSWER_POLICY_UNSPECIFIED: None,
    question_answering_pb2.NO_ANSWER_POLICY_NEVER: False,
    question_answering_pb2.NO_ANSWER_POLICY_ALLOW: True,
}


def given(**options: int) -> dict[str, int]:
    """The options a request sets: proto3 sends an unset number as 0, which means "the default"."""
    return {name: value for name, value in options.items() if value}


class FillMaskService(fill_mask_pb2_grpc.FillMaskServiceServicer):
    """bertserve.v1.FillMaskService."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def FillMask(  # noqa: N802 (gRPC method name)
        self, request: fill_mask_pb2.FillMaskRequest, context: grpc.aio.ServicerContext
    ) -> fill_mask_pb2.FillMaskResponse:
        head = self._runtime.head(request.head, task="fill-mask")
        items = [
            FillMaskInput(
                text=text, targets=tuple(request.targets), truncate=request.truncate, **given(top_k=request.top_k)
            )
            for text in request.texts
        ]
        outputs = await self._runtime.run(head, items, context, fields=FILL_MASK_FIELDS)
        return fill_mask_pb2.FillMaskResponse(
            results=[
                fill_mask_pb2.FillMaskResult(
                    masks=[
                        fill_mask_pb2.MaskPredictions(
                            token_index=mask.token_index,
                            predictions=[
                                fill_mask_pb2.TokenPrediction(
                                    token=p.token, token_id=p.token_id, score=p.score, sequence=p.sequence
                                )
                                for p in mask.predictions
                            ],
                        )
                        for mask in output.masks
                    ]
                )
                for output in outputs
            ]
        )


class NextSentenceService(next_sentence_pb2_grpc.NextSentenceServiceServicer):
    """bertserve.v1.NextSentenceService."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def PredictNextSentence(  # noqa: N802
        self, request: next_sentence_pb2.PredictNextSentenceRequest, context: grpc.aio.ServicerContext
    ) -> next_sentence_pb2.PredictNextSentenceResponse:
        head = self._runtime.head(request.head, task="next-sentence")
        items = [NextSentenceInput(first=p.first, second=p.second, truncate=request.truncate) for p in request.pairs]
        outputs = await self._runtime.run(head, items, context, fields=NEXT_SENTENCE_FIELDS)
        return next_sentence_pb2.PredictNextSentenceResponse(
            results=[
                next_sentence_pb2.NextSentenceResult(
                    is_next_probability=o.is_next_probability, is_next=o.is_next_probability >= 0.5
                )
                for o in outputs
            ]
        )


class SentimentService(sentiment_pb2_grpc.SentimentServiceServicer):
    """bertserve.v1.SentimentService."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def ClassifySentiment(  # noqa: N802
        self, request: sentiment_pb2.ClassifySentimentRequest, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.ClassifySentimentResponse:
        head = self._runtime.head(request.head, task="sentiment")
        items = [TextClassificationInput(text=text, truncate=request.truncate) for text in request.texts]
        outputs = await self._runtime.run(head, items, context, fields=SENTIMENT_FIELDS)
        return sentiment_pb2.ClassifySentimentResponse(
            results=[
                sentiment_pb2.SentimentResult(
                    label=o.label,
                    score=o.score,
                    scores=[sentiment_pb2.LabelScore(label=s.label, score=s.score) for s in o.scores],
                )
                for o in outputs
            ]
        )


class QuestionAnsweringService(question_answering_pb2_grpc.QuestionAnsweringServiceServicer):
    """bertserve.v1.QuestionAnsweringService."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def AnswerQuestion(  # noqa: N802
        self, request: question_answering_pb2.AnswerQuestionRequest, context: grpc.aio.ServicerContext
    ) -> question_answering_pb2.AnswerQuestionResponse:
        head = self._runtime.head(request.head, task="question-answering")
        items = [
            QuestionAnsweringInput(
                question=q.question,
                context=q.context,
                allow_no_answer=_NO_ANSWER.get(request.no_answer_policy),
                **given(
                    top_k=request.top_k,
                    max_answer_length=request.max_answer_length,
                    doc_stride=request.doc_stride,
                ),
            )
            for q in request.inputs
        ]
        outputs = await self._runtime.run(head, items, context, fields=QA_FIELDS)
        return question_answering_pb2.AnswerQuestionResponse(
            results=[
                question_answering_pb2.AnswerQuestionResult(
                    answers=[
                        question_answering_pb2.Answer(
                            text=a.text,
                            score=a.score,
                            start=a.start,
                            end=a.end,
                            no_answer=a.no_answer,
                            start_byte=a.start_byte,
                            end_byte=a.end_byte,
                        )
                        for a in o.answers
                    ]
                )
                for o in outputs
            ]
        )
