"""The built-in gRPC services, registered through the same hook a plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from bertserve_client.v1 import (
    fill_mask_pb2_grpc,
    inference_pb2_grpc,
    model_pb2_grpc,
    next_sentence_pb2_grpc,
    question_answering_pb2_grpc,
    sentiment_pb2_grpc,
)

from bertserve.config import ServerConfig
from bertserve.plugin.hooks import API_VERSION, hookimpl
from bertserve.plugin.service import ServiceDefinition
from bertserve.version import __version__
from bertserve.wire.oip import grpc_service as oip
from bertserve.wire.services.inference import InferenceService
from bertserve.wire.services.model import ModelService
from bertserve.wire.services.tasks import (
    FillMaskService,
    NextSentenceService,
    QuestionAnsweringService,
    SentimentService,
)

BERTSERVE_API_VERSION = API_VERSION
PLUGIN_NAME = "bertserve-services"


# (service name, generated add-function, servicer class, heads the service needs)
_SERVICES: list[tuple[str, Callable[[Any, Any], None], Callable[[Any], Any], tuple[str, ...]]] = [
    (
        "bertserve.v1.FillMaskService",
        fill_mask_pb2_grpc.add_FillMaskServiceServicer_to_server,
        FillMaskService,
        ("fill-mask",),
    ),
    (
        "bertserve.v1.NextSentenceService",
        next_sentence_pb2_grpc.add_NextSentenceServiceServicer_to_server,
        NextSentenceService,
        ("next-sentence",),
    ),
    (
        "bertserve.v1.SentimentService",
        sentiment_pb2_grpc.add_SentimentServiceServicer_to_server,
        SentimentService,
        ("sentiment",),
    ),
    (
        "bertserve.v1.QuestionAnsweringService",
        question_answering_pb2_grpc.add_QuestionAnsweringServiceServicer_to_server,
        QuestionAnsweringService,
        ("question-answering",),
    ),
    (
        "bertserve.v1.ModelService",
        model_pb2_grpc.add_ModelServiceServicer_to_server,
        partial(ModelService, server_version=__version__),
        (),
    ),
    (
        "bertserve.v1.InferenceService",
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        InferenceService,
        (),
    ),
    (
        oip.SERVICE_NAME,  # the Open Inference Protocol (KServe v2, Triton's messages): every head is a model
        oip.add_to_server,
        oip.GRPCInferenceService,
        (),
    ),
]


@hookimpl
def register_services(register: Callable[[ServiceDefinition], None], config: ServerConfig) -> None:
    """The four task services (each needs its default head), model, inference and the Open Inference Protocol."""
    for name, add_to_server, servicer, heads in _SERVICES:
        register(ServiceDefinition(name, _adder(add_to_server, servicer), heads=heads))


def _adder(add_to_server: Callable[[Any, Any], None], servicer: Callable[[Any], Any]) -> Callable[[Any, Any], None]:
    def add(server: Any, runner: Any) -> None:
        add_to_server(servicer(runner), server)

    return add
