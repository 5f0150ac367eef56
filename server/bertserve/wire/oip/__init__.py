"""The Open Inference Protocol (KServe v2, as Triton speaks it): each head is a model.

`tensors` encodes and decodes tensors (raw little-endian bytes, typed
contents, JSON data); `models` derives a head's model metadata from its
schemas and translates between tensors and task inputs and outputs. Both are
pure (dicts and dataclasses, no gRPC message), for the gRPC servicer
(`grpc_service`) and an HTTP door alike.
"""
