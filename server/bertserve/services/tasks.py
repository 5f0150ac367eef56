"""The typed task services: fill-mask, next-sentence, sentiment, question answering."""

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

from ..runtime import Runtime
from ..tasks import (
    FillMaskInput,
    NextSentenceInput,
    QuestionAnsweringInput,
    TextClassificationInput,
)

DEFAULT_TOP_K = 5
DEFAULT_QA_TOP_K = 1
DEFAULT_MAX_ANSWER_LENGTH = 15
DEFAULT_DOC_STRIDE = 128
_NO_ANSWER = {
    question_answering_pb2.NO_ANSWER_POLICY_UNSPECIFIED: None,
    question_answering_pb2.NO_ANSWER_POLICY_NEVER: False,
    question_answering_pb2.NO_ANSWER_POLICY_ALLOW: True,
}


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
                text=text,
                top_k=request.top_k or DEFAULT_TOP_K,
                targets=tuple(request.targets),
                truncate=request.truncate,
            )
            for text in request.texts
        ]
        outputs = await self._runtime.run(head, items, context, field_of=lambda i: f"texts[{i}]")
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
        outputs = await self._runtime.run(head, items, context, field_of=lambda i: f"pairs[{i}]")
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
        outputs = await self._runtime.run(head, items, context, field_of=lambda i: f"texts[{i}]")
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
                top_k=request.top_k or DEFAULT_QA_TOP_K,
                max_answer_length=request.max_answer_length or DEFAULT_MAX_ANSWER_LENGTH,
                doc_stride=request.doc_stride or DEFAULT_DOC_STRIDE,
                allow_no_answer=_NO_ANSWER.get(request.no_answer_policy),
            )
            for q in request.inputs
        ]
        outputs = await self._runtime.run(head, items, context, field_of=lambda i: f"inputs[{i}]")
        return question_answering_pb2.AnswerQuestionResponse(
            results=[
                question_answering_pb2.AnswerQuestionResult(
                    answers=[
                        question_answering_pb2.Answer(
                            text=a.text, score=a.score, start=a.start, end=a.end, no_answer=a.no_answer
                        )
                        for a in o.answers
                    ]
                )
                for o in outputs
            ]
        )
